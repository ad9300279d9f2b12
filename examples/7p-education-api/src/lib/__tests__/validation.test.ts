import {
  isValidEmail,
  LIMITS,
  parseId,
  parseListQuery,
  validateNewCourse,
  validateNewEnrollment,
} from '../validation';

const good = { title: 'Intro to CI/CD', priceCents: 4900, capacity: 30 };

function errorsOf(result: ReturnType<typeof validateNewCourse | typeof validateNewEnrollment>) {
  return result.ok ? [] : result.errors;
}

describe('validateNewCourse', () => {
  it('accepts a minimal course and fills in defaults', () => {
    expect(validateNewCourse(good)).toEqual({
      ok: true,
      value: {
        slug: 'intro-to-ci-cd',
        title: 'Intro to CI/CD',
        description: '',
        priceCents: 4900,
        discountPercent: 0,
        capacity: 30,
      },
    });
  });

  it('keeps an explicit slug, trims text and keeps the discount', () => {
    const result = validateNewCourse({
      ...good,
      title: '  Spaced  ',
      description: '  Learn it. ',
      slug: 'custom-slug-1',
      discountPercent: 15,
    });
    expect(result.ok && result.value).toMatchObject({
      slug: 'custom-slug-1',
      title: 'Spaced',
      description: 'Learn it.',
      discountPercent: 15,
    });
  });

  it.each([null, 'text', 42, [good]])('rejects a non-object body %p', (body) => {
    expect(errorsOf(validateNewCourse(body))).toEqual(['body must be a JSON object']);
  });

  it('reports every problem at once', () => {
    const errors = errorsOf(
      validateNewCourse({ title: 'ab', priceCents: -1, capacity: 0, discountPercent: 101 }),
    );
    expect(errors).toEqual([
      `title must be ${LIMITS.titleMin}-${LIMITS.titleMax} characters`,
      `priceCents must be an integer between 0 and ${LIMITS.priceMaxCents}`,
      'discountPercent must be an integer between 0 and 100',
      `capacity must be an integer between 1 and ${LIMITS.capacityMax}`,
    ]);
  });

  it('requires a string title', () => {
    expect(errorsOf(validateNewCourse({ ...good, title: 5 }))).toEqual([
      'title is required and must be a string',
    ]);
  });

  it('rejects fractional or string numbers', () => {
    expect(errorsOf(validateNewCourse({ ...good, priceCents: 10.5 }))).toHaveLength(1);
    expect(errorsOf(validateNewCourse({ ...good, capacity: '30' }))).toHaveLength(1);
  });

  it('validates description type and length', () => {
    expect(errorsOf(validateNewCourse({ ...good, description: 3 }))).toEqual([
      'description must be a string',
    ]);
    expect(
      errorsOf(validateNewCourse({ ...good, description: 'x'.repeat(LIMITS.descriptionMax + 1) })),
    ).toHaveLength(1);
  });

  it('rejects malformed slugs', () => {
    expect(errorsOf(validateNewCourse({ ...good, slug: 'Not A Slug' }))).toEqual([
      'slug must be lower-case letters, digits and single dashes',
    ]);
  });

  it('rejects titles that produce an empty slug', () => {
    expect(errorsOf(validateNewCourse({ ...good, title: '!!!???' }))).toEqual([
      'title must contain at least one letter or digit',
    ]);
  });
});

describe('validateNewEnrollment', () => {
  it('normalizes e-mail and coupon', () => {
    expect(
      validateNewEnrollment({ studentEmail: ' Ada@Example.COM ', couponCode: 'welcome10' }),
    ).toEqual({ ok: true, value: { studentEmail: 'ada@example.com', couponCode: 'WELCOME10' } });
  });

  it('makes the coupon optional', () => {
    const result = validateNewEnrollment({ studentEmail: 'a@b.io', couponCode: null });
    expect(result).toEqual({ ok: true, value: { studentEmail: 'a@b.io', couponCode: null } });
  });

  it('rejects bad e-mails, unknown coupons and wrong types', () => {
    expect(errorsOf(validateNewEnrollment({ studentEmail: 'nope' }))).toEqual([
      'studentEmail must be a valid e-mail address',
    ]);
    expect(errorsOf(validateNewEnrollment({ studentEmail: 'a@b.io', couponCode: 'X' }))).toEqual([
      'couponCode "X" is not valid',
    ]);
    expect(errorsOf(validateNewEnrollment({ studentEmail: 1, couponCode: 2 }))).toEqual([
      'studentEmail must be a valid e-mail address',
      'couponCode must be a string',
    ]);
    expect(errorsOf(validateNewEnrollment(undefined))).toEqual(['body must be a JSON object']);
  });
});

describe('isValidEmail', () => {
  it.each(['a@b.co', 'first.last+tag@sub.example.org'])('accepts %p', (email) => {
    expect(isValidEmail(email)).toBe(true);
  });

  it.each(['', 'a@b', '@b.co', 'a b@c.de', 'a@b@c.de', `${'a'.repeat(250)}@b.co`])(
    'rejects %p',
    (email) => {
      expect(isValidEmail(email)).toBe(false);
    },
  );
});

describe('parseId', () => {
  it('parses positive integers', () => {
    expect(parseId('1')).toBe(1);
    expect(parseId('2147483647')).toBe(2147483647);
  });

  it.each(['0', '-1', '01', '1.5', 'abc', '', '2147483648', '99999999999'])('rejects %p', (raw) => {
    expect(parseId(raw)).toBeNull();
  });

  it('rejects non-strings', () => {
    expect(parseId(undefined)).toBeNull();
    expect(parseId(['1'])).toBeNull();
  });
});

describe('parseListQuery', () => {
  it('defaults limit and offset', () => {
    expect(parseListQuery({})).toEqual({
      ok: true,
      value: { limit: LIMITS.pageDefault, offset: 0 },
    });
  });

  it('reads limit and offset', () => {
    expect(parseListQuery({ limit: '5', offset: '10' })).toEqual({
      ok: true,
      value: { limit: 5, offset: 10 },
    });
  });

  it('rejects out-of-range or malformed values', () => {
    expect(parseListQuery({ limit: '0', offset: '-1' })).toEqual({
      ok: false,
      errors: [
        `limit must be an integer between 1 and ${LIMITS.pageMax}`,
        'offset must be a non-negative integer',
      ],
    });
    expect(parseListQuery({ limit: String(LIMITS.pageMax + 1) }).ok).toBe(false);
    expect(parseListQuery({ limit: ['1', '2'] }).ok).toBe(false);
  });
});

import { COUPONS, normalizeCouponCode } from './pricing';
import { isSlug, slugify } from './slug';

export type Validation<T> = { ok: true; value: T } | { ok: false; errors: string[] };

export interface NewCourse {
  slug: string;
  title: string;
  description: string;
  priceCents: number;
  discountPercent: number;
  capacity: number;
}

export interface NewEnrollment {
  studentEmail: string;
  couponCode: string | null;
}

export interface ListQuery {
  limit: number;
  offset: number;
}

export const LIMITS = {
  titleMin: 3,
  titleMax: 200,
  descriptionMax: 2000,
  priceMaxCents: 10_000_000,
  capacityMax: 10_000,
  emailMax: 254,
  pageDefault: 20,
  pageMax: 100,
} as const;

// Deliberately simple; the length check in isValidEmail runs first and bounds the work.
const EMAIL_RE = /^[^\s@]+@[^\s@]+\.[^\s@]+$/;

function isPlainObject(value: unknown): value is Record<string, unknown> {
  return typeof value === 'object' && value !== null && !Array.isArray(value);
}

function intInRange(value: unknown, min: number, max: number): value is number {
  return typeof value === 'number' && Number.isInteger(value) && value >= min && value <= max;
}

/** Validates the body of POST /api/courses and derives the slug when none is given. */
export function validateNewCourse(body: unknown): Validation<NewCourse> {
  if (!isPlainObject(body)) return { ok: false, errors: ['body must be a JSON object'] };
  const errors: string[] = [];
  const { title, description, priceCents, discountPercent, capacity, slug } = body;

  const cleanTitle = typeof title === 'string' ? title.trim() : '';
  if (typeof title !== 'string') {
    errors.push('title is required and must be a string');
  } else if (cleanTitle.length < LIMITS.titleMin || cleanTitle.length > LIMITS.titleMax) {
    errors.push(`title must be ${LIMITS.titleMin}-${LIMITS.titleMax} characters`);
  }

  if (description !== undefined && typeof description !== 'string') {
    errors.push('description must be a string');
  } else if (typeof description === 'string' && description.length > LIMITS.descriptionMax) {
    errors.push(`description must be at most ${LIMITS.descriptionMax} characters`);
  }

  if (!intInRange(priceCents, 0, LIMITS.priceMaxCents)) {
    errors.push(`priceCents must be an integer between 0 and ${LIMITS.priceMaxCents}`);
  }
  if (discountPercent !== undefined && !intInRange(discountPercent, 0, 100)) {
    errors.push('discountPercent must be an integer between 0 and 100');
  }
  if (!intInRange(capacity, 1, LIMITS.capacityMax)) {
    errors.push(`capacity must be an integer between 1 and ${LIMITS.capacityMax}`);
  }

  let finalSlug = '';
  if (slug !== undefined) {
    if (typeof slug !== 'string' || !isSlug(slug)) {
      errors.push('slug must be lower-case letters, digits and single dashes');
    } else {
      finalSlug = slug;
    }
  } else if (cleanTitle !== '') {
    finalSlug = slugify(cleanTitle);
    if (finalSlug === '' && errors.length === 0) {
      errors.push('title must contain at least one letter or digit');
    }
  }

  if (errors.length > 0) return { ok: false, errors };
  return {
    ok: true,
    value: {
      slug: finalSlug,
      title: cleanTitle,
      description: typeof description === 'string' ? description.trim() : '',
      priceCents: priceCents as number,
      discountPercent: (discountPercent as number | undefined) ?? 0,
      capacity: capacity as number,
    },
  };
}

export function isValidEmail(value: string): boolean {
  return value.length <= LIMITS.emailMax && EMAIL_RE.test(value);
}

/** Validates the body of POST /api/courses/:id/enrollments. */
export function validateNewEnrollment(body: unknown): Validation<NewEnrollment> {
  if (!isPlainObject(body)) return { ok: false, errors: ['body must be a JSON object'] };
  const errors: string[] = [];
  const { studentEmail, couponCode } = body;

  const email = typeof studentEmail === 'string' ? studentEmail.trim().toLowerCase() : '';
  if (typeof studentEmail !== 'string' || !isValidEmail(email)) {
    errors.push('studentEmail must be a valid e-mail address');
  }

  let coupon: string | null = null;
  if (couponCode !== undefined && couponCode !== null) {
    if (typeof couponCode !== 'string') {
      errors.push('couponCode must be a string');
    } else if (!COUPONS.has(normalizeCouponCode(couponCode))) {
      errors.push(`couponCode "${couponCode}" is not valid`);
    } else {
      coupon = normalizeCouponCode(couponCode);
    }
  }

  if (errors.length > 0) return { ok: false, errors };
  return { ok: true, value: { studentEmail: email, couponCode: coupon } };
}

/** Parses a positive integer id from a route parameter; null when it is not one. */
export function parseId(raw: unknown): number | null {
  if (typeof raw !== 'string' || !/^[1-9]\d{0,9}$/.test(raw)) return null;
  const id = Number(raw);
  return id <= 2_147_483_647 ? id : null;
}

function parseNonNegativeInt(raw: unknown): number | null {
  if (typeof raw !== 'string' || !/^\d{1,6}$/.test(raw)) return null;
  return Number(raw);
}

/** Parses ?limit=&offset= for list endpoints. */
export function parseListQuery(query: Record<string, unknown>): Validation<ListQuery> {
  const errors: string[] = [];
  let limit: number = LIMITS.pageDefault;
  let offset = 0;
  if (query.limit !== undefined) {
    const parsed = parseNonNegativeInt(query.limit);
    if (parsed === null || parsed < 1 || parsed > LIMITS.pageMax) {
      errors.push(`limit must be an integer between 1 and ${LIMITS.pageMax}`);
    } else {
      limit = parsed;
    }
  }
  if (query.offset !== undefined) {
    const parsed = parseNonNegativeInt(query.offset);
    if (parsed === null) errors.push('offset must be a non-negative integer');
    else offset = parsed;
  }
  if (errors.length > 0) return { ok: false, errors };
  return { ok: true, value: { limit, offset } };
}

import { isSlug, MAX_SLUG_LENGTH, slugify } from '../slug';

describe('slugify', () => {
  it('lower-cases and joins words with single dashes', () => {
    expect(slugify('Intro to   TypeScript!')).toBe('intro-to-typescript');
  });

  it('strips accents and trims separators', () => {
    expect(slugify('  Café Crème: Ünïcödé --  ')).toBe('cafe-creme-unicode');
  });

  it('spells out ampersands', () => {
    expect(slugify('Docker & Kubernetes')).toBe('docker-and-kubernetes');
  });

  it('returns an empty string when nothing usable is left', () => {
    expect(slugify('!!! ???')).toBe('');
  });

  it(`caps the length at ${MAX_SLUG_LENGTH} without a trailing dash`, () => {
    const slug = slugify(`${'a'.repeat(79)} bcd`);
    expect(slug.length).toBeLessThanOrEqual(MAX_SLUG_LENGTH);
    expect(slug).toBe('a'.repeat(79));
    expect(slug.endsWith('-')).toBe(false);
  });
});

describe('isSlug', () => {
  it.each(['a', 'node-20', 'ci-cd-for-beginners'])('accepts %p', (value) => {
    expect(isSlug(value)).toBe(true);
  });

  it.each(['', 'Upper', '-lead', 'trail-', 'double--dash', 'space here', 'x'.repeat(81)])(
    'rejects %p',
    (value) => {
      expect(isSlug(value)).toBe(false);
    },
  );

  it('accepts every non-empty slugify output', () => {
    for (const title of ['Hello World', 'Ärger & Ölpreis 2024', 'PostgreSQL 15: Deep-Dive']) {
      expect(isSlug(slugify(title))).toBe(true);
    }
  });
});

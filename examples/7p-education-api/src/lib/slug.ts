export const MAX_SLUG_LENGTH = 80;

/**
 * Turns a course title into a URL-safe slug: lower-case ASCII letters, digits and
 * single dashes, without leading or trailing dashes, at most {@link MAX_SLUG_LENGTH} chars.
 */
export function slugify(input: string): string {
  const slug = input
    .normalize('NFKD')
    .replace(/[\u0300-\u036f]/g, '')
    .toLowerCase()
    .replace(/&/g, ' and ')
    .replace(/[^a-z0-9]+/g, '-')
    .replace(/^-+|-+$/g, '');
  if (slug.length <= MAX_SLUG_LENGTH) return slug;
  return slug.slice(0, MAX_SLUG_LENGTH).replace(/-+$/g, '');
}

/** True when `value` is already a well-formed slug. */
export function isSlug(value: string): boolean {
  return (
    value.length > 0 &&
    value.length <= MAX_SLUG_LENGTH &&
    /^[a-z0-9-]+$/.test(value) &&
    !value.startsWith('-') &&
    !value.endsWith('-') &&
    !value.includes('--')
  );
}

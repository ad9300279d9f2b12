export const DEFAULT_CACHE_PREFIX = '7p-education:';

/** Normalises a key prefix so that it always ends in a single colon. */
export function normalizePrefix(prefix: string = DEFAULT_CACHE_PREFIX): string {
  const trimmed = prefix.trim().replace(/:+$/, '');
  return trimmed === '' ? '' : `${trimmed}:`;
}

/** Redis key holding one course's JSON, e.g. "7p-education:course:42". */
export function courseKey(id: number, prefix?: string): string {
  if (!Number.isSafeInteger(id) || id <= 0) {
    throw new RangeError(`invalid course id for cache key: ${id}`);
  }
  return `${normalizePrefix(prefix)}course:${id}`;
}

/** SCAN pattern matching every key under the prefix (used to clean up a namespace). */
export function namespacePattern(prefix?: string): string {
  return `${normalizePrefix(prefix)}*`;
}

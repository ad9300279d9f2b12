import { courseKey, DEFAULT_CACHE_PREFIX, namespacePattern, normalizePrefix } from '../cacheKeys';

describe('normalizePrefix', () => {
  it('defaults to the app prefix', () => {
    expect(normalizePrefix()).toBe(DEFAULT_CACHE_PREFIX);
  });

  it('ends with exactly one colon', () => {
    expect(normalizePrefix('tenant')).toBe('tenant:');
    expect(normalizePrefix('tenant:::')).toBe('tenant:');
    expect(normalizePrefix(' run-1: ')).toBe('run-1:');
  });

  it('allows an empty prefix', () => {
    expect(normalizePrefix('')).toBe('');
    expect(normalizePrefix(':')).toBe('');
  });
});

describe('courseKey', () => {
  it('builds namespaced keys', () => {
    expect(courseKey(42)).toBe('7p-education:course:42');
    expect(courseKey(7, 'test-abc')).toBe('test-abc:course:7');
  });

  it('gives distinct keys to distinct courses and namespaces', () => {
    const keys = new Set([courseKey(1), courseKey(2), courseKey(1, 'other')]);
    expect(keys.size).toBe(3);
  });

  it.each([0, -1, 1.5, Number.NaN, Number.MAX_SAFE_INTEGER + 1])('rejects id %p', (id) => {
    expect(() => courseKey(id)).toThrow(RangeError);
  });
});

describe('namespacePattern', () => {
  it('matches everything under the prefix', () => {
    expect(namespacePattern('test-abc')).toBe('test-abc:*');
    expect(namespacePattern()).toBe(`${DEFAULT_CACHE_PREFIX}*`);
  });
});

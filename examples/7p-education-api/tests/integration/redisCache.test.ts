import { createRedisClient, RedisCache } from '../../src/cache/cache';
import { courseKey } from '../../src/lib/cacheKeys';
import { createTestRedis, type TestRedis } from '../helpers/services';

describe('RedisCache (Redis)', () => {
  let redis: TestRedis;
  let cache: RedisCache;

  beforeAll(async () => {
    redis = await createTestRedis('cache');
    cache = new RedisCache(redis.client);
  });

  afterAll(async () => {
    await redis.cleanup();
  });

  it('answers PING', async () => {
    await expect(cache.ping()).resolves.toBeUndefined();
  });

  it('stores, reads and deletes values under the run prefix', async () => {
    const key = courseKey(1, redis.prefix);
    expect(await cache.get(key)).toBeNull();
    await cache.set(key, '{"id":1}', 60);
    expect(await cache.get(key)).toBe('{"id":1}');
    expect(await redis.keys()).toEqual([key]);
    await cache.del(key);
    expect(await cache.get(key)).toBeNull();
  });

  it('sets a TTL on every entry', async () => {
    const key = courseKey(2, redis.prefix);
    await cache.set(key, 'x', 30);
    const ttl = await redis.client.ttl(key);
    expect(ttl).toBeGreaterThan(0);
    expect(ttl).toBeLessThanOrEqual(30);
  });

  it('fails fast instead of queueing commands while disconnected', async () => {
    const offline = createRedisClient(process.env.REDIS_URI as string);
    const offlineCache = new RedisCache(offline);
    // Never connected: with the offline queue disabled the command must reject at once.
    await expect(offlineCache.get('anything')).rejects.toThrow();
  });
});

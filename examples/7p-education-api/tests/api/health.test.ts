import type { Pool } from 'pg';
import request from 'supertest';
import { createApp } from '../../src/app';
import { RedisCache, type Cache } from '../../src/cache/cache';
import {
  createTestDatabase,
  createTestRedis,
  type TestDatabase,
  type TestRedis,
} from '../helpers/services';

describe('GET /health', () => {
  let db: TestDatabase;
  let redis: TestRedis;

  beforeAll(async () => {
    db = await createTestDatabase('health');
    redis = await createTestRedis('health');
  });

  afterAll(async () => {
    await redis.cleanup();
    await db.cleanup();
  });

  it('reports ok when PostgreSQL and Redis answer', async () => {
    const app = createApp({ pool: db.pool, cache: new RedisCache(redis.client) });
    const res = await request(app).get('/health').expect(200).expect('Content-Type', /json/);
    expect(res.body).toMatchObject({ status: 'ok', checks: { database: 'ok', redis: 'ok' } });
    expect(typeof res.body.uptimeSeconds).toBe('number');
    expect(Number.isNaN(Date.parse(res.body.timestamp))).toBe(false);
  });

  it('returns 503 and names the failing dependency when Redis is down', async () => {
    const brokenCache: Cache = {
      get: async () => null,
      set: async () => undefined,
      del: async () => undefined,
      ping: async () => {
        throw new Error('ECONNREFUSED');
      },
    };
    const res = await request(createApp({ pool: db.pool, cache: brokenCache })).get('/health');
    expect(res.status).toBe(503);
    expect(res.body).toMatchObject({
      status: 'degraded',
      checks: { database: 'ok', redis: 'error' },
    });
  });

  it('times out a hanging database check instead of hanging itself', async () => {
    const hangingPool = { query: () => new Promise(() => undefined) } as unknown as Pool;
    const app = createApp({
      pool: hangingPool,
      cache: new RedisCache(redis.client),
      healthTimeoutMs: 50,
    });
    const res = await request(app).get('/health');
    expect(res.status).toBe(503);
    expect(res.body.checks).toEqual({ database: 'error', redis: 'ok' });
  });
});

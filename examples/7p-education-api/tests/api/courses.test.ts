import type { Express } from 'express';
import type { Pool } from 'pg';
import request from 'supertest';
import { createApp } from '../../src/app';
import { RedisCache } from '../../src/cache/cache';
import { courseKey } from '../../src/lib/cacheKeys';
import {
  createTestDatabase,
  createTestRedis,
  type TestDatabase,
  type TestRedis,
} from '../helpers/services';

describe('courses API', () => {
  let db: TestDatabase;
  let redis: TestRedis;
  let app: Express;
  const errors: unknown[] = [];

  const newCourse = (title: string, extra: Record<string, unknown> = {}) =>
    request(app)
      .post('/api/courses')
      .send({ title, priceCents: 20_000, capacity: 2, ...extra });

  beforeAll(async () => {
    db = await createTestDatabase('api');
    redis = await createTestRedis('api');
    app = createApp({
      pool: db.pool,
      cache: new RedisCache(redis.client),
      cachePrefix: redis.prefix,
      cacheTtlSeconds: 30,
      logError: (err) => errors.push(err),
    });
  });

  afterAll(async () => {
    await redis.cleanup();
    await db.cleanup();
  });

  describe('POST /api/courses', () => {
    it('creates a course, derives the slug and points to it', async () => {
      const res = await newCourse('Pipelines & Quality Gates', {
        description: 'CI/CD from scratch',
        discountPercent: 25,
      }).expect(201);
      expect(res.body).toMatchObject({
        slug: 'pipelines-and-quality-gates',
        title: 'Pipelines & Quality Gates',
        description: 'CI/CD from scratch',
        priceCents: 20_000,
        discountPercent: 25,
        capacity: 2,
        enrolledCount: 0,
        seatsLeft: 2,
        effectivePriceCents: 15_000,
        effectivePrice: '€150.00',
      });
      expect(res.headers.location).toBe(`/api/courses/${res.body.id}`);
    });

    it('answers 400 with every validation error', async () => {
      const res = await request(app)
        .post('/api/courses')
        .send({ title: 'x', priceCents: 'free', capacity: 0 })
        .expect(400);
      expect(res.body.error).toBe('invalid course');
      expect(res.body.details).toHaveLength(3);
    });

    it('answers 400 to malformed JSON', async () => {
      const res = await request(app)
        .post('/api/courses')
        .set('Content-Type', 'application/json')
        .send('{"title": ')
        .expect(400);
      expect(res.body.error).toBe('request body is not valid JSON');
    });

    it('answers 413 to oversized bodies', async () => {
      await request(app)
        .post('/api/courses')
        .send({ title: 'Big', description: 'x'.repeat(20_000), priceCents: 1, capacity: 1 })
        .expect(413);
    });

    it('answers 409 to a duplicate slug', async () => {
      await newCourse('Same Title').expect(201);
      const res = await newCourse('Same  title!').expect(409);
      expect(res.body.error).toMatch(/same-title/);
    });
  });

  describe('GET /api/courses', () => {
    it('lists courses with pagination', async () => {
      await newCourse('Listing One').expect(201);
      await newCourse('Listing Two').expect(201);
      const all = await request(app).get('/api/courses').expect(200);
      expect(all.body.pagination).toMatchObject({ limit: 20, offset: 0 });
      expect(all.body.pagination.total).toBe(all.body.data.length);
      expect(all.body.data.map((c: { slug: string }) => c.slug)).toEqual(
        expect.arrayContaining(['listing-one', 'listing-two']),
      );

      const page = await request(app).get('/api/courses?limit=1&offset=1').expect(200);
      expect(page.body.data).toEqual([all.body.data[1]]);
    });

    it('answers 400 to a bad limit', async () => {
      const res = await request(app).get('/api/courses?limit=1000').expect(400);
      expect(res.body.details).toEqual(['limit must be an integer between 1 and 100']);
    });
  });

  describe('GET /api/courses/:id', () => {
    it('reads through the Redis cache', async () => {
      const { body: created } = await newCourse('Cached Course').expect(201);

      const first = await request(app).get(`/api/courses/${created.id}`).expect(200);
      expect(first.headers['x-cache']).toBe('MISS');
      expect(first.body).toEqual(created);

      const key = courseKey(created.id, redis.prefix);
      expect(JSON.parse((await redis.client.get(key)) as string)).toEqual(created);
      expect(await redis.client.ttl(key)).toBeGreaterThan(0);

      const second = await request(app).get(`/api/courses/${created.id}`).expect(200);
      expect(second.headers['x-cache']).toBe('HIT');
      expect(second.body).toEqual(created);
    });

    it('serves from the cache even if the row changed underneath', async () => {
      const { body: created } = await newCourse('Stale Title').expect(201);
      await request(app).get(`/api/courses/${created.id}`).expect(200);
      await db.pool.query('UPDATE courses SET title = $1 WHERE id = $2', ['Fresh', created.id]);
      const res = await request(app).get(`/api/courses/${created.id}`).expect(200);
      expect(res.headers['x-cache']).toBe('HIT');
      expect(res.body.title).toBe('Stale Title');
    });

    it('answers 404 for a missing course and caches nothing', async () => {
      const res = await request(app).get('/api/courses/987654').expect(404);
      expect(res.body.error).toBe('course 987654 not found');
      expect(await redis.client.exists(courseKey(987654, redis.prefix))).toBe(0);
    });

    it('answers 400 for a malformed id', async () => {
      await request(app).get('/api/courses/abc').expect(400);
      await request(app).get('/api/courses/0').expect(400);
    });
  });

  describe('POST /api/courses/:id/enrollments', () => {
    it('enrolls, prices with the coupon and invalidates the cached course', async () => {
      const { body: created } = await newCourse('Enroll Here', { discountPercent: 10 }).expect(201);
      await request(app).get(`/api/courses/${created.id}`).expect(200); // warm the cache

      const res = await request(app)
        .post(`/api/courses/${created.id}/enrollments`)
        .send({ studentEmail: 'Grace@Example.com', couponCode: 'student20' })
        .expect(201);
      expect(res.body.enrollment).toMatchObject({
        courseId: created.id,
        studentEmail: 'grace@example.com',
        couponCode: 'STUDENT20',
        pricePaidCents: 14_000,
      });
      expect(res.body.price).toEqual({
        listPriceCents: 20_000,
        discountPercent: 30,
        discountCents: 6_000,
        finalPriceCents: 14_000,
      });
      expect(res.body.course).toMatchObject({ enrolledCount: 1, seatsLeft: 1 });

      const after = await request(app).get(`/api/courses/${created.id}`).expect(200);
      expect(after.headers['x-cache']).toBe('MISS');
      expect(after.body.enrolledCount).toBe(1);

      const list = await request(app).get(`/api/courses/${created.id}/enrollments`).expect(200);
      expect(list.body.data).toEqual([res.body.enrollment]);
    });

    it('answers 409 to a repeat enrollment and to a full course', async () => {
      const { body: created } = await newCourse('Two Seats').expect(201);
      const enroll = (email: string) =>
        request(app).post(`/api/courses/${created.id}/enrollments`).send({ studentEmail: email });

      await enroll('a@example.com').expect(201);
      const again = await enroll('A@example.com').expect(409);
      expect(again.body.error).toMatch(/already enrolled/);
      await enroll('b@example.com').expect(201);
      const full = await enroll('c@example.com').expect(409);
      expect(full.body.error).toBe(`course ${created.id} is full`);
    });

    it('answers 400 to invalid input and 404 to a missing course', async () => {
      const bad = await request(app)
        .post('/api/courses/1/enrollments')
        .send({ studentEmail: 'not-an-email', couponCode: 'BOGUS' })
        .expect(400);
      expect(bad.body.details).toEqual([
        'studentEmail must be a valid e-mail address',
        'couponCode "BOGUS" is not valid',
      ]);
      await request(app)
        .post('/api/courses/987654/enrollments')
        .send({ studentEmail: 'x@example.com' })
        .expect(404);
      await request(app).get('/api/courses/987654/enrollments').expect(404);
    });
  });

  it('answers unknown routes with a JSON 404', async () => {
    const res = await request(app).get('/api/nope').expect(404);
    expect(res.body).toEqual({ error: 'no route for GET /api/nope' });
  });

  it('hides unexpected errors behind a 500 and reports them', async () => {
    const failingPool = {
      query: async () => {
        throw new Error('connection reset');
      },
    } as unknown as Pool;
    const broken = createApp({
      pool: failingPool,
      cache: new RedisCache(redis.client),
      cachePrefix: redis.prefix,
      logError: (err) => errors.push(err),
    });
    const res = await request(broken).get('/api/courses').expect(500);
    expect(res.body).toEqual({ error: 'internal server error' });
    expect(errors.pop()).toEqual(new Error('connection reset'));
  });
});

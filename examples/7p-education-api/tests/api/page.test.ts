import type { Express } from 'express';
import request from 'supertest';
import { createApp } from '../../src/app';
import type { Cache } from '../../src/cache/cache';
import { createTestDatabase, type TestDatabase } from '../helpers/services';

// The course catalogue page is static: serving it needs no Redis, only the app wiring.
describe('course catalogue page', () => {
  let db: TestDatabase;
  let app: Express;
  const cache: Cache = {
    get: async () => null,
    set: async () => undefined,
    del: async () => undefined,
    ping: async () => undefined,
  };

  beforeAll(async () => {
    db = await createTestDatabase('page');
    app = createApp({ pool: db.pool, cache });
  });

  afterAll(async () => {
    await db.cleanup();
  });

  it('serves the page at / with a same-origin-only content security policy', async () => {
    const res = await request(app).get('/').expect(200).expect('Content-Type', /html/);
    expect(res.text).toContain('<script src="/catalogue.js" defer></script>');
    expect(res.headers['content-security-policy']).toContain("default-src 'self'");
    expect(res.headers['x-content-type-options']).toBe('nosniff');
  });

  it('serves the page script and keeps JSON 404s for unknown paths', async () => {
    await request(app)
      .get('/catalogue.js')
      .expect(200)
      .expect('Content-Type', /javascript/);
    const res = await request(app).get('/no-such-page').expect(404);
    expect(res.body).toEqual({ error: 'no route for GET /no-such-page' });
  });
});

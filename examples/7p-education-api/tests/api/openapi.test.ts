import type { Pool } from 'pg';
import request from 'supertest';
import spec from '../../api-spec/openapi.json';
import { createApp } from '../../src/app';
import type { Cache } from '../../src/cache/cache';

// Every operation in the OpenAPI document must be routed by the app (none may hit the
// catch-all 404). Dependencies are stubbed: this only checks the routing table.
describe('documented routes', () => {
  const pool = { query: async () => ({ rows: [] }) } as unknown as Pool;
  const cache: Cache = {
    get: async () => null,
    set: async () => undefined,
    del: async () => undefined,
    ping: async () => undefined,
  };
  const app = createApp({ pool, cache, logError: () => undefined });

  const operations = Object.entries(spec.paths).flatMap(([route, item]) =>
    Object.keys(item).map((method) => ({ method, route, url: route.replace('{id}', '1') })),
  );

  it('covers the endpoints of the API', () => {
    expect(operations.map((op) => `${op.method.toUpperCase()} ${op.route}`)).toEqual([
      'GET /health',
      'GET /api/courses',
      'POST /api/courses',
      'GET /api/courses/{id}',
      'GET /api/courses/{id}/enrollments',
      'POST /api/courses/{id}/enrollments',
    ]);
  });

  it.each(operations)('$method $route is routed', async ({ method, url }) => {
    const res = await request(app)[method as 'get' | 'post'](url).send({});
    expect(res.body.error ?? '').not.toMatch(/^no route for/);
  });
});

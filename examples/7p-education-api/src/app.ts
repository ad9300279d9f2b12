import path from 'node:path';
import express, { type ErrorRequestHandler, type Express } from 'express';
import type { Pool } from 'pg';
import type { Cache } from './cache/cache';
import { DEFAULT_CACHE_PREFIX } from './lib/cacheKeys';
import { HttpError } from './lib/errors';
import { withTimeout } from './lib/timeout';
import { CourseRepository } from './db/courses';
import { coursesRouter } from './routes/courses';

export interface AppDeps {
  pool: Pool;
  cache: Cache;
  /** Namespace for every Redis key the app writes (tests use a unique one per run). */
  cachePrefix?: string;
  cacheTtlSeconds?: number;
  /** Per-dependency budget for GET /health. */
  healthTimeoutMs?: number;
  /** Where unexpected errors are reported; console.error by default. */
  logError?: (err: unknown) => void;
  /** Static course catalogue page (GET /); `public/` next to src/ and dist/ by default. */
  publicDir?: string;
}

/** `public/` of the app folder, both from src/ (ts-jest) and from the compiled dist/. */
export const DEFAULT_PUBLIC_DIR = path.join(__dirname, '..', 'public');

/** Only the page's own files may load: no inline scripts, no third-party origins. */
const PAGE_CSP = "default-src 'self'; object-src 'none'; base-uri 'self'; frame-ancestors 'none'";

type CheckState = 'ok' | 'error';

/** Builds the Express application; no ports are opened and no connections are made here. */
export function createApp(deps: AppDeps): Express {
  const healthTimeoutMs = deps.healthTimeoutMs ?? 2_000;
  const logError = deps.logError ?? ((err: unknown) => console.error(err));
  const app = express();
  app.disable('x-powered-by');
  app.use(express.json({ limit: '10kb' }));

  app.get('/health', async (_req, res) => {
    const check = async (fn: () => Promise<unknown>, label: string): Promise<CheckState> => {
      try {
        await withTimeout(fn(), healthTimeoutMs, label);
        return 'ok';
      } catch {
        return 'error';
      }
    };
    const [database, redis] = await Promise.all([
      check(() => deps.pool.query('SELECT 1'), 'database'),
      check(() => deps.cache.ping(), 'redis'),
    ]);
    const healthy = database === 'ok' && redis === 'ok';
    res.status(healthy ? 200 : 503).json({
      status: healthy ? 'ok' : 'degraded',
      checks: { database, redis },
      uptimeSeconds: Math.round(process.uptime()),
      timestamp: new Date().toISOString(),
    });
  });

  app.use(
    '/api/courses',
    coursesRouter({
      courses: new CourseRepository(deps.pool),
      cache: deps.cache,
      cachePrefix: deps.cachePrefix ?? DEFAULT_CACHE_PREFIX,
      cacheTtlSeconds: deps.cacheTtlSeconds ?? 60,
    }),
  );

  // After the API routes: the page only answers paths the API does not own.
  app.use(
    express.static(deps.publicDir ?? DEFAULT_PUBLIC_DIR, {
      index: 'index.html',
      setHeaders: (res) => {
        res.setHeader('Content-Security-Policy', PAGE_CSP);
        res.setHeader('X-Content-Type-Options', 'nosniff');
      },
    }),
  );

  app.use((req, res) => {
    res.status(404).json({ error: `no route for ${req.method} ${req.path}` });
  });

  const errorHandler: ErrorRequestHandler = (err, _req, res, _next) => {
    if (err instanceof HttpError) {
      res.status(err.status).json({ error: err.message, details: err.details });
      return;
    }
    // Errors raised by express.json(): malformed JSON (400), body too large (413), ...
    const { status, type } = err as { status?: unknown; type?: unknown };
    if (type === 'entity.parse.failed') {
      res.status(400).json({ error: 'request body is not valid JSON' });
      return;
    }
    if (typeof status === 'number' && status >= 400 && status < 500) {
      res.status(status).json({ error: (err as Error).message });
      return;
    }
    logError(err);
    res.status(500).json({ error: 'internal server error' });
  };
  app.use(errorHandler);

  return app;
}

import type { Server } from 'node:http';
import { createApp } from './app';
import { createRedisClient, RedisCache } from './cache/cache';
import { ConfigError, loadConfig } from './config';
import { createPool } from './db/pool';
import { runMigrations } from './db/migrate';

async function main(): Promise<void> {
  const config = loadConfig();
  const pool = createPool(config.postgresUri);
  pool.on('error', (err) => console.error(`postgres: ${err.message}`));
  const redis = createRedisClient(config.redisUri);
  // Connect in the background: until Redis is up the cache is bypassed and /health says so.
  redis.connect().catch((err: Error) => console.error(`redis connect: ${err.message}`));

  await runMigrations(pool, { log: (message) => console.log(message) });

  const app = createApp({
    pool,
    cache: new RedisCache(redis),
    cachePrefix: config.cachePrefix,
    cacheTtlSeconds: config.cacheTtlSeconds,
  });
  // Express 5 calls this callback with the error when listening fails (e.g. EADDRINUSE):
  // exit instead of running on without a socket while another process answers the port.
  const onListening = (err?: Error): void => {
    if (err) {
      console.error(
        `7p-education-api cannot listen on ${config.host ?? '*'}:${config.port}: ${err.message}`,
      );
      process.exit(1);
    }
    console.log(`7p-education-api listening on ${config.host ?? '*'}:${config.port}`);
  };
  const server: Server = config.host
    ? app.listen(config.port, config.host, onListening)
    : app.listen(config.port, onListening);

  let stopping = false;
  const shutdown = (signal: string): void => {
    if (stopping) return;
    stopping = true;
    console.log(`${signal} received, shutting down`);
    const force = setTimeout(() => process.exit(1), 10_000);
    force.unref();
    server.close(() => {
      Promise.allSettled([pool.end(), redis.isOpen ? redis.quit() : Promise.resolve()]).then(() =>
        process.exit(0),
      );
    });
  };
  process.on('SIGTERM', () => shutdown('SIGTERM'));
  process.on('SIGINT', () => shutdown('SIGINT'));
}

main().catch((err: unknown) => {
  const message = err instanceof ConfigError ? err.message : err instanceof Error ? err.stack : err;
  console.error(`7p-education-api failed to start: ${message}`);
  process.exit(1);
});

import { randomBytes } from 'node:crypto';
import type { Pool } from 'pg';
import { createRedisClient, type RedisClient } from '../../src/cache/cache';
import { createPool } from '../../src/db/pool';
import { runMigrations } from '../../src/db/migrate';
import { namespacePattern } from '../../src/lib/cacheKeys';

/** Reads a required variable or fails with a message that says what to set. */
export function requireEnv(name: 'POSTGRESQL_URI' | 'REDIS_URI'): string {
  const value = (
    name === 'POSTGRESQL_URI' ? process.env.POSTGRESQL_URI : process.env.REDIS_URI
  )?.trim();
  if (!value) {
    throw new Error(`${name} is not set: these tests need a real service (see README.md)`);
  }
  return value;
}

/** A name unique to this test run, usable as a PostgreSQL schema and a Redis key prefix. */
export function uniqueRunId(label: string): string {
  return `t_${label}_${Date.now().toString(36)}_${randomBytes(4).toString('hex')}`;
}

export interface TestDatabase {
  pool: Pool;
  schema: string;
  cleanup(): Promise<void>;
}

/**
 * Creates a private schema for this run, migrates it and returns a pool whose search_path
 * points at it. cleanup() drops the schema with everything in it and closes the pools, so
 * reruns and parallel suites never see each other's rows.
 */
export async function createTestDatabase(label: string, migrate = true): Promise<TestDatabase> {
  const uri = requireEnv('POSTGRESQL_URI');
  const schema = uniqueRunId(label);
  const admin = createPool(uri, { max: 1 });
  await admin.query(`CREATE SCHEMA ${schema}`);
  const pool = createPool(uri, { schema, max: 5 });
  if (migrate) await runMigrations(pool);
  return {
    pool,
    schema,
    async cleanup() {
      await pool.end();
      await admin.query(`DROP SCHEMA IF EXISTS ${schema} CASCADE`);
      await admin.end();
    },
  };
}

export interface TestRedis {
  client: RedisClient;
  prefix: string;
  keys(): Promise<string[]>;
  cleanup(): Promise<void>;
}

/** A connected Redis client plus a key prefix unique to this run; cleanup() deletes its keys. */
export async function createTestRedis(label: string): Promise<TestRedis> {
  const client = createRedisClient(requireEnv('REDIS_URI'));
  await client.connect();
  const prefix = `${uniqueRunId(label)}:`;
  const keys = async (): Promise<string[]> => {
    const found: string[] = [];
    for await (const key of client.scanIterator({ MATCH: namespacePattern(prefix), COUNT: 100 })) {
      found.push(key);
    }
    return found;
  };
  return {
    client,
    prefix,
    keys,
    async cleanup() {
      const leftover = await keys();
      if (leftover.length > 0) await client.del(leftover);
      await client.quit();
    },
  };
}

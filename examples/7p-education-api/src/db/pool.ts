import { Pool } from 'pg';

export interface PoolOptions {
  /** Run every query with this schema first on the search_path (tests use a private one). */
  schema?: string;
  max?: number;
}

const SCHEMA_RE = /^[a-z_][a-z0-9_]{0,62}$/;

export function createPool(connectionString: string, options: PoolOptions = {}): Pool {
  if (options.schema !== undefined && !SCHEMA_RE.test(options.schema)) {
    throw new Error(`invalid schema name: ${options.schema}`);
  }
  return new Pool({
    connectionString,
    max: options.max ?? 10,
    connectionTimeoutMillis: 5_000,
    idleTimeoutMillis: 30_000,
    options: options.schema ? `-c search_path=${options.schema},public` : undefined,
  });
}

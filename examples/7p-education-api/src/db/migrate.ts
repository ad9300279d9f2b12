import type { Pool } from 'pg';
import { runMigrations as run, type RunMigrationsOptions } from '../../migrations/index';

/** Applies pending SQL migrations from migrations/*.sql (idempotent, safe to call at startup). */
export function runMigrations(pool: Pool, options?: RunMigrationsOptions): Promise<string[]> {
  return run(pool, options);
}

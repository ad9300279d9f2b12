import type { Pool } from 'pg';

export interface Migration {
  id: string;
  sql: string;
}

export interface RunMigrationsOptions {
  log?: (message: string) => void;
  dir?: string;
}

export declare const MIGRATIONS_DIR: string;
export declare function listMigrations(dir?: string): Migration[];
export declare function runMigrations(
  pool: Pool,
  options?: RunMigrationsOptions,
): Promise<string[]>;

'use strict';
// Tiny SQL migration runner shared by the app (src/db/migrate.ts) and `npm run db:migrate`.
// Applies every migrations/*.sql file in name order, once, recording it in schema_migrations.
// Unqualified table names follow the connection's search_path, so tests can migrate a
// private schema. A transaction-level advisory lock serialises concurrent runners.

const fs = require('node:fs');
const path = require('node:path');

const MIGRATIONS_DIR = __dirname;
const LOCK_ID = 7007001;

function listMigrations(dir = MIGRATIONS_DIR) {
  return fs
    .readdirSync(dir)
    .filter((name) => /^\d+_[\w-]+\.sql$/.test(name))
    .sort()
    .map((name) => ({
      id: name.replace(/\.sql$/, ''),
      sql: fs.readFileSync(path.join(dir, name), 'utf8'),
    }));
}

/**
 * @param {{ connect(): Promise<{ query: Function, release: Function }> }} pool a pg Pool
 * @param {{ log?: (message: string) => void, dir?: string }} [options]
 * @returns {Promise<string[]>} ids of the migrations applied by this call
 */
async function runMigrations(pool, options = {}) {
  const log = options.log || (() => {});
  const migrations = listMigrations(options.dir);
  const client = await pool.connect();
  const applied = [];
  try {
    await client.query('BEGIN');
    await client.query('SELECT pg_advisory_xact_lock($1)', [LOCK_ID]);
    await client.query(
      `CREATE TABLE IF NOT EXISTS schema_migrations (
         id         TEXT PRIMARY KEY,
         applied_at TIMESTAMPTZ NOT NULL DEFAULT now()
       )`,
    );
    const { rows } = await client.query('SELECT id FROM schema_migrations');
    const done = new Set(rows.map((row) => row.id));
    for (const migration of migrations) {
      if (done.has(migration.id)) continue;
      await client.query(migration.sql);
      await client.query('INSERT INTO schema_migrations (id) VALUES ($1)', [migration.id]);
      applied.push(migration.id);
      log(`applied migration ${migration.id}`);
    }
    await client.query('COMMIT');
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  } finally {
    client.release();
  }
  return applied;
}

module.exports = { runMigrations, listMigrations, MIGRATIONS_DIR };

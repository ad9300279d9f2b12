#!/usr/bin/env node
'use strict';
// `npm run db:migrate`: applies migrations/*.sql to the database in POSTGRESQL_URI.
// The server also runs this at startup; running it again is a no-op.
const { Pool } = require('pg');
const { runMigrations } = require('../migrations');

async function main() {
  const uri = process.env.POSTGRESQL_URI;
  if (!uri || !uri.trim()) {
    console.error(
      'db:migrate: POSTGRESQL_URI is not set (e.g. postgresql://localhost:5432/education)',
    );
    process.exit(1);
  }
  const pool = new Pool({ connectionString: uri, max: 1, connectionTimeoutMillis: 10000 });
  try {
    const applied = await runMigrations(pool, { log: (message) => console.log(message) });
    console.log(
      applied.length > 0
        ? `db:migrate: applied ${applied.length} migration(s)`
        : 'db:migrate: database is up to date',
    );
  } finally {
    await pool.end();
  }
}

main().catch((err) => {
  console.error(`db:migrate failed: ${err.message}`);
  process.exit(1);
});

import { listMigrations } from '../../migrations/index';
import { runMigrations } from '../../src/db/migrate';
import { createTestDatabase, type TestDatabase } from '../helpers/services';

describe('SQL migrations', () => {
  let db: TestDatabase;

  beforeAll(async () => {
    db = await createTestDatabase('migrate', false);
  });

  afterAll(async () => {
    await db.cleanup();
  });

  it('lists the SQL files in order', () => {
    const ids = listMigrations().map((migration) => migration.id);
    expect(ids[0]).toBe('001_init');
    expect([...ids].sort()).toEqual(ids);
  });

  it('creates the tables on the first run and records what it applied', async () => {
    const applied = await runMigrations(db.pool);
    expect(applied).toEqual(listMigrations().map((migration) => migration.id));

    const { rows } = await db.pool.query<{ table_name: string }>(
      `SELECT table_name FROM information_schema.tables
       WHERE table_schema = $1 ORDER BY table_name`,
      [db.schema],
    );
    expect(rows.map((row) => row.table_name)).toEqual([
      'courses',
      'enrollments',
      'schema_migrations',
    ]);
  });

  it('is a no-op when run again, also concurrently', async () => {
    const results = await Promise.all([runMigrations(db.pool), runMigrations(db.pool)]);
    expect(results).toEqual([[], []]);
    const { rows } = await db.pool.query('SELECT id FROM schema_migrations');
    expect(rows).toHaveLength(listMigrations().length);
  });

  it('enforces the constraints in the schema', async () => {
    await expect(
      db.pool.query(
        `INSERT INTO courses (slug, title, price_cents, capacity) VALUES ('x', 'X', -1, 1)`,
      ),
    ).rejects.toThrow(/check constraint/);
  });
});

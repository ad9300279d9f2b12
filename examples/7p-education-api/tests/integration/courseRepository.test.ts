import {
  AlreadyEnrolledError,
  CourseFullError,
  CourseRepository,
  DuplicateSlugError,
} from '../../src/db/courses';
import type { NewCourse } from '../../src/lib/validation';
import { createTestDatabase, type TestDatabase } from '../helpers/services';

const course = (slug: string, overrides: Partial<NewCourse> = {}): NewCourse => ({
  slug,
  title: `Course ${slug}`,
  description: 'A course',
  priceCents: 10_000,
  discountPercent: 10,
  capacity: 3,
  ...overrides,
});

describe('CourseRepository (PostgreSQL)', () => {
  let db: TestDatabase;
  let repo: CourseRepository;

  beforeAll(async () => {
    db = await createTestDatabase('repo');
    repo = new CourseRepository(db.pool);
  });

  afterAll(async () => {
    await db.cleanup();
  });

  it('creates and reads back a course', async () => {
    const created = await repo.create(course('typescript-basics'));
    expect(created).toMatchObject({
      slug: 'typescript-basics',
      priceCents: 10_000,
      discountPercent: 10,
      capacity: 3,
      enrolledCount: 0,
    });
    expect(Number.isInteger(created.id)).toBe(true);
    expect(new Date(created.createdAt).toString()).not.toBe('Invalid Date');
    expect(await repo.findById(created.id)).toEqual(created);
  });

  it('returns null for an unknown id', async () => {
    expect(await repo.findById(999_999)).toBeNull();
  });

  it('refuses a duplicate slug', async () => {
    await repo.create(course('dup-slug'));
    await expect(repo.create(course('dup-slug'))).rejects.toBeInstanceOf(DuplicateSlugError);
  });

  it('lists courses in id order with a total', async () => {
    await repo.create(course('list-a'));
    await repo.create(course('list-b'));
    const all = await repo.list(100, 0);
    expect(all.total).toBe(all.items.length);
    const ids = all.items.map((item) => item.id);
    expect([...ids].sort((a, b) => a - b)).toEqual(ids);

    const page = await repo.list(1, 1);
    expect(page.items).toHaveLength(1);
    expect(page.items[0]).toEqual(all.items[1]);
    expect(page.total).toBe(all.total);
  });

  it('enrolls students, records the price and counts seats', async () => {
    const target = await repo.create(course('enroll-me'));
    const result = await repo.enroll(target.id, 'ada@example.com', 'WELCOME10', (c) => {
      expect(c.id).toBe(target.id);
      return 8000;
    });
    expect(result?.enrollment).toMatchObject({
      courseId: target.id,
      studentEmail: 'ada@example.com',
      couponCode: 'WELCOME10',
      pricePaidCents: 8000,
    });
    expect(result?.course.enrolledCount).toBe(1);
    expect((await repo.findById(target.id))?.enrolledCount).toBe(1);
    expect(await repo.listEnrollments(target.id)).toEqual([result?.enrollment]);
  });

  it('rejects a second enrollment of the same student', async () => {
    const target = await repo.create(course('no-twice'));
    await repo.enroll(target.id, 'bob@example.com', null, () => 100);
    await expect(repo.enroll(target.id, 'bob@example.com', null, () => 100)).rejects.toBeInstanceOf(
      AlreadyEnrolledError,
    );
    expect(await repo.listEnrollments(target.id)).toHaveLength(1);
  });

  it('returns null when enrolling in a missing course', async () => {
    expect(await repo.enroll(999_999, 'x@example.com', null, () => 0)).toBeNull();
  });

  it('never overfills a course, even under concurrent enrollments', async () => {
    const target = await repo.create(course('tiny-class', { capacity: 2 }));
    const attempts = await Promise.allSettled(
      ['a', 'b', 'c', 'd', 'e'].map((name) =>
        repo.enroll(target.id, `${name}@example.com`, null, () => 500),
      ),
    );
    const ok = attempts.filter((attempt) => attempt.status === 'fulfilled');
    const full = attempts.filter(
      (attempt) => attempt.status === 'rejected' && attempt.reason instanceof CourseFullError,
    );
    expect(ok).toHaveLength(2);
    expect(full).toHaveLength(3);
    expect((await repo.findById(target.id))?.enrolledCount).toBe(2);
  });
});

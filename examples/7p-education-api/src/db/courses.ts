import type { Pool, PoolClient } from 'pg';
import type { NewCourse } from '../lib/validation';

export interface Course {
  id: number;
  slug: string;
  title: string;
  description: string;
  priceCents: number;
  discountPercent: number;
  capacity: number;
  enrolledCount: number;
  createdAt: string;
}

export interface Enrollment {
  id: number;
  courseId: number;
  studentEmail: string;
  couponCode: string | null;
  pricePaidCents: number;
  createdAt: string;
}

export class DuplicateSlugError extends Error {
  constructor(slug: string) {
    super(`a course with slug "${slug}" already exists`);
    this.name = 'DuplicateSlugError';
  }
}

export class AlreadyEnrolledError extends Error {
  constructor(email: string) {
    super(`${email} is already enrolled in this course`);
    this.name = 'AlreadyEnrolledError';
  }
}

export class CourseFullError extends Error {
  constructor(courseId: number) {
    super(`course ${courseId} is full`);
    this.name = 'CourseFullError';
  }
}

interface CourseRow {
  id: number;
  slug: string;
  title: string;
  description: string;
  price_cents: number;
  discount_percent: number;
  capacity: number;
  enrolled_count: string | number;
  created_at: Date;
}

interface EnrollmentRow {
  id: number;
  course_id: number;
  student_email: string;
  coupon_code: string | null;
  price_paid_cents: number;
  created_at: Date;
}

const COURSE_COLUMNS = `c.id, c.slug, c.title, c.description, c.price_cents, c.discount_percent,
  c.capacity, c.created_at,
  (SELECT count(*) FROM enrollments e WHERE e.course_id = c.id) AS enrolled_count`;

const UNIQUE_VIOLATION = '23505';

function isUniqueViolation(err: unknown): boolean {
  return (
    typeof err === 'object' && err !== null && (err as { code?: string }).code === UNIQUE_VIOLATION
  );
}

function toCourse(row: CourseRow): Course {
  return {
    id: row.id,
    slug: row.slug,
    title: row.title,
    description: row.description,
    priceCents: row.price_cents,
    discountPercent: row.discount_percent,
    capacity: row.capacity,
    enrolledCount: Number(row.enrolled_count),
    createdAt: row.created_at.toISOString(),
  };
}

function toEnrollment(row: EnrollmentRow): Enrollment {
  return {
    id: row.id,
    courseId: row.course_id,
    studentEmail: row.student_email,
    couponCode: row.coupon_code,
    pricePaidCents: row.price_paid_cents,
    createdAt: row.created_at.toISOString(),
  };
}

/** Data access for courses and enrollments. */
export class CourseRepository {
  constructor(private readonly pool: Pool) {}

  async list(limit: number, offset: number): Promise<{ items: Course[]; total: number }> {
    const [items, total] = await Promise.all([
      this.pool.query<CourseRow>(
        `SELECT ${COURSE_COLUMNS} FROM courses c ORDER BY c.id LIMIT $1 OFFSET $2`,
        [limit, offset],
      ),
      this.pool.query<{ total: string }>('SELECT count(*) AS total FROM courses'),
    ]);
    return { items: items.rows.map(toCourse), total: Number(total.rows[0].total) };
  }

  async findById(id: number): Promise<Course | null> {
    const { rows } = await this.pool.query<CourseRow>(
      `SELECT ${COURSE_COLUMNS} FROM courses c WHERE c.id = $1`,
      [id],
    );
    return rows.length > 0 ? toCourse(rows[0]) : null;
  }

  async create(course: NewCourse): Promise<Course> {
    try {
      const { rows } = await this.pool.query<CourseRow>(
        `INSERT INTO courses (slug, title, description, price_cents, discount_percent, capacity)
         VALUES ($1, $2, $3, $4, $5, $6)
         RETURNING id, slug, title, description, price_cents, discount_percent, capacity,
                   created_at, 0 AS enrolled_count`,
        [
          course.slug,
          course.title,
          course.description,
          course.priceCents,
          course.discountPercent,
          course.capacity,
        ],
      );
      return toCourse(rows[0]);
    } catch (err) {
      if (isUniqueViolation(err)) throw new DuplicateSlugError(course.slug);
      throw err;
    }
  }

  /**
   * Enrolls a student. The course row is locked so concurrent enrollments cannot overfill it.
   * `price` is computed by the caller from the locked course (see lib/pricing).
   */
  async enroll(
    courseId: number,
    studentEmail: string,
    couponCode: string | null,
    price: (course: Course) => number,
  ): Promise<{ course: Course; enrollment: Enrollment } | null> {
    const client: PoolClient = await this.pool.connect();
    try {
      await client.query('BEGIN');
      // Lock first; the count below then runs on a fresh snapshot (READ COMMITTED) and sees
      // every enrollment committed by whoever held the lock before us.
      const locked = await client.query('SELECT id FROM courses WHERE id = $1 FOR UPDATE', [
        courseId,
      ]);
      if (locked.rows.length === 0) {
        await client.query('ROLLBACK');
        return null;
      }
      const current = await client.query<CourseRow>(
        `SELECT ${COURSE_COLUMNS} FROM courses c WHERE c.id = $1`,
        [courseId],
      );
      const course = toCourse(current.rows[0]);
      if (course.enrolledCount >= course.capacity) throw new CourseFullError(courseId);
      const inserted = await client.query<EnrollmentRow>(
        `INSERT INTO enrollments (course_id, student_email, coupon_code, price_paid_cents)
         VALUES ($1, $2, $3, $4)
         RETURNING id, course_id, student_email, coupon_code, price_paid_cents, created_at`,
        [courseId, studentEmail, couponCode, price(course)],
      );
      await client.query('COMMIT');
      return {
        course: { ...course, enrolledCount: course.enrolledCount + 1 },
        enrollment: toEnrollment(inserted.rows[0]),
      };
    } catch (err) {
      await client.query('ROLLBACK').catch(() => undefined);
      if (isUniqueViolation(err)) throw new AlreadyEnrolledError(studentEmail);
      throw err;
    } finally {
      client.release();
    }
  }

  async listEnrollments(courseId: number): Promise<Enrollment[]> {
    const { rows } = await this.pool.query<EnrollmentRow>(
      `SELECT id, course_id, student_email, coupon_code, price_paid_cents, created_at
       FROM enrollments WHERE course_id = $1 ORDER BY id`,
      [courseId],
    );
    return rows.map(toEnrollment);
  }
}

-- 001_init: courses and enrollments.
-- Idempotent on purpose: every statement is safe to run again.

CREATE TABLE IF NOT EXISTS courses (
  id               SERIAL PRIMARY KEY,
  slug             TEXT        NOT NULL UNIQUE,
  title            TEXT        NOT NULL,
  description      TEXT        NOT NULL DEFAULT '',
  price_cents      INTEGER     NOT NULL CHECK (price_cents >= 0),
  discount_percent INTEGER     NOT NULL DEFAULT 0 CHECK (discount_percent BETWEEN 0 AND 100),
  capacity         INTEGER     NOT NULL CHECK (capacity > 0),
  created_at       TIMESTAMPTZ NOT NULL DEFAULT now()
);

CREATE TABLE IF NOT EXISTS enrollments (
  id               SERIAL PRIMARY KEY,
  course_id        INTEGER     NOT NULL REFERENCES courses (id) ON DELETE CASCADE,
  student_email    TEXT        NOT NULL,
  coupon_code      TEXT,
  price_paid_cents INTEGER     NOT NULL CHECK (price_paid_cents >= 0),
  created_at       TIMESTAMPTZ NOT NULL DEFAULT now(),
  UNIQUE (course_id, student_email)
);

CREATE INDEX IF NOT EXISTS enrollments_course_id_idx ON enrollments (course_id);

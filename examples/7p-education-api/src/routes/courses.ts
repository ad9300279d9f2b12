import { Router } from 'express';
import type { Cache } from '../cache/cache';
import {
  AlreadyEnrolledError,
  CourseFullError,
  DuplicateSlugError,
  type Course,
  type CourseRepository,
} from '../db/courses';
import { courseKey } from '../lib/cacheKeys';
import { badRequest, conflict, HttpError, notFound } from '../lib/errors';
import { formatCents, quotePrice } from '../lib/pricing';
import {
  parseId,
  parseListQuery,
  validateNewCourse,
  validateNewEnrollment,
} from '../lib/validation';

export interface CoursesRouterDeps {
  courses: CourseRepository;
  cache: Cache;
  cachePrefix: string;
  cacheTtlSeconds: number;
}

/** A course as the API shows it: the stored fields plus its current price. */
function present(course: Course) {
  const quote = quotePrice(course.priceCents, course.discountPercent);
  return {
    ...course,
    seatsLeft: Math.max(course.capacity - course.enrolledCount, 0),
    effectivePriceCents: quote.finalPriceCents,
    effectivePrice: formatCents(quote.finalPriceCents),
  };
}

function requireId(raw: unknown): number {
  const id = parseId(raw);
  if (id === null) throw badRequest('course id must be a positive integer');
  return id;
}

export function coursesRouter(deps: CoursesRouterDeps): Router {
  const { courses, cache, cachePrefix, cacheTtlSeconds } = deps;
  const router = Router();

  const dropCached = async (id: number): Promise<void> => {
    try {
      await cache.del(courseKey(id, cachePrefix));
    } catch {
      // The TTL bounds staleness if Redis is unavailable right now.
    }
  };

  router.get('/', async (req, res) => {
    const query = parseListQuery(req.query as Record<string, unknown>);
    if (!query.ok) throw badRequest('invalid query', query.errors);
    const { items, total } = await courses.list(query.value.limit, query.value.offset);
    res.json({ data: items.map(present), pagination: { ...query.value, total } });
  });

  router.post('/', async (req, res) => {
    const input = validateNewCourse(req.body);
    if (!input.ok) throw badRequest('invalid course', input.errors);
    try {
      const course = await courses.create(input.value);
      res.status(201).location(`${req.baseUrl}/${course.id}`).json(present(course));
    } catch (err) {
      if (err instanceof DuplicateSlugError) throw conflict(err.message);
      throw err;
    }
  });

  router.get('/:id', async (req, res) => {
    const id = requireId(req.params.id);
    const key = courseKey(id, cachePrefix);
    let cacheState = 'MISS';
    try {
      const cached = await cache.get(key);
      if (cached !== null) {
        res.set('X-Cache', 'HIT').type('application/json').send(cached);
        return;
      }
    } catch {
      cacheState = 'BYPASS';
    }
    const course = await courses.findById(id);
    if (course === null) throw notFound(`course ${id} not found`);
    const body = JSON.stringify(present(course));
    if (cacheState === 'MISS') {
      await cache.set(key, body, cacheTtlSeconds).catch(() => undefined);
    }
    res.set('X-Cache', cacheState).type('application/json').send(body);
  });

  router.get('/:id/enrollments', async (req, res) => {
    const id = requireId(req.params.id);
    if ((await courses.findById(id)) === null) throw notFound(`course ${id} not found`);
    res.json({ data: await courses.listEnrollments(id) });
  });

  router.post('/:id/enrollments', async (req, res) => {
    const id = requireId(req.params.id);
    const input = validateNewEnrollment(req.body);
    if (!input.ok) throw badRequest('invalid enrollment', input.errors);
    const { studentEmail, couponCode } = input.value;
    try {
      const result = await courses.enroll(
        id,
        studentEmail,
        couponCode,
        (course) =>
          quotePrice(course.priceCents, course.discountPercent, couponCode).finalPriceCents,
      );
      if (result === null) throw notFound(`course ${id} not found`);
      await dropCached(id);
      res.status(201).json({
        enrollment: result.enrollment,
        price: quotePrice(result.course.priceCents, result.course.discountPercent, couponCode),
        course: present(result.course),
      });
    } catch (err) {
      if (err instanceof HttpError) throw err;
      if (err instanceof AlreadyEnrolledError || err instanceof CourseFullError) {
        throw conflict(err.message);
      }
      throw err;
    }
  });

  return router;
}

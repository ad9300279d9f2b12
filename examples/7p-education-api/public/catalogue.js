'use strict';
// Course catalogue page: lists the newest courses from GET /api/courses and creates new
// ones with POST /api/courses. Plain browser JavaScript, no build step; all text goes
// through textContent so course data is never parsed as HTML.

const PAGE_SIZE = 50;

function setMessage(element, text, kind) {
  element.textContent = text;
  element.className = kind;
}

async function fetchJson(url, options) {
  const res = await fetch(url, {
    ...options,
    headers: { Accept: 'application/json', ...(options && options.headers) },
  });
  let body = null;
  try {
    body = await res.json();
  } catch {
    // Non-JSON answer: the status code alone tells what happened.
  }
  return { status: res.status, ok: res.ok, body };
}

function describeError(result) {
  const body = result.body || {};
  const details = Array.isArray(body.details) ? `: ${body.details.join('; ')}` : '';
  return `${body.error || `HTTP ${result.status}`}${details}`;
}

async function showHealth() {
  const status = document.getElementById('api-status');
  try {
    const result = await fetchJson('/health');
    const state = result.body && result.body.status ? result.body.status : `HTTP ${result.status}`;
    setMessage(status, state, result.ok ? 'ok' : 'error');
  } catch (err) {
    setMessage(status, `unreachable (${err.message})`, 'error');
  }
}

function courseRow(course) {
  const row = document.createElement('tr');
  row.dataset.testid = 'course';
  row.dataset.courseId = String(course.id);
  row.dataset.slug = course.slug;
  for (const text of [course.title, course.effectivePrice, String(course.seatsLeft)]) {
    const cell = document.createElement('td');
    cell.textContent = text;
    row.appendChild(cell);
  }
  return row;
}

/** Shows the newest PAGE_SIZE courses, newest first (the API lists them oldest first). */
async function loadCourses() {
  const summary = document.getElementById('courses-summary');
  const tbody = document.querySelector('#courses tbody');
  try {
    const head = await fetchJson('/api/courses?limit=1');
    if (!head.ok) throw new Error(describeError(head));
    const total = head.body.pagination.total;
    const offset = Math.max(total - PAGE_SIZE, 0);
    const page = await fetchJson(`/api/courses?limit=${PAGE_SIZE}&offset=${offset}`);
    if (!page.ok) throw new Error(describeError(page));
    const courses = page.body.data.slice().reverse();
    tbody.replaceChildren(...courses.map(courseRow));
    const shown = courses.length;
    setMessage(
      summary,
      total === 0
        ? 'No courses yet.'
        : `${total} course${total === 1 ? '' : 's'}${shown < total ? `, newest ${shown} shown` : ''}`,
      '',
    );
  } catch (err) {
    setMessage(summary, `Could not load courses: ${err.message}`, 'error');
  }
}

async function createCourse(event) {
  event.preventDefault();
  const form = event.target;
  const message = document.getElementById('form-message');
  const data = new FormData(form);
  const course = {
    title: String(data.get('title') || ''),
    priceCents: Math.round(Number(data.get('price')) * 100),
    capacity: Number(data.get('capacity')),
    discountPercent: Number(data.get('discountPercent') || 0),
  };
  const description = String(data.get('description') || '').trim();
  if (description) course.description = description;

  const button = form.querySelector('button[type="submit"]');
  button.disabled = true;
  try {
    const result = await fetchJson('/api/courses', {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify(course),
    });
    if (!result.ok) {
      setMessage(message, `Not created: ${describeError(result)}`, 'error');
      return;
    }
    setMessage(message, `Created "${result.body.title}" (${result.body.effectivePrice})`, 'ok');
    form.reset();
    await loadCourses();
  } catch (err) {
    setMessage(message, `Not created: ${err.message}`, 'error');
  } finally {
    button.disabled = false;
  }
}

document.addEventListener('DOMContentLoaded', () => {
  document.getElementById('create-course').addEventListener('submit', createCourse);
  showHealth();
  loadCourses();
});

import { randomBytes } from 'node:crypto';
import { expect, test } from '@playwright/test';

/** A title no earlier run has used: the database is shared by every test of the run. */
function uniqueTitle(label: string): string {
  return `E2E ${label} ${Date.now().toString(36)}${randomBytes(3).toString('hex')}`;
}

test.describe('course catalogue page', () => {
  test('loads and reports the API healthy', async ({ page }) => {
    await page.goto('/');
    await expect(page).toHaveTitle(/Course catalogue/);
    await expect(page.getByRole('heading', { level: 1 })).toHaveText(
      '7P Education course catalogue',
    );
    await expect(page.getByTestId('api-status')).toHaveText('ok');
    await expect(page.getByTestId('courses-summary')).not.toHaveText(/Loading|Could not/);
  });

  test('lists a course created through the API, with its discounted price', async ({
    page,
    request,
  }) => {
    const title = uniqueTitle('listed');
    const created = await request.post('/api/courses', {
      data: { title, priceCents: 12_000, capacity: 5, discountPercent: 25 },
    });
    expect(created.status()).toBe(201);

    await page.goto('/');
    const row = page.getByTestId('course').filter({ hasText: title });
    await expect(row).toHaveCount(1);
    await expect(row.locator('td')).toHaveText([title, '€90.00', '5']);
  });

  test('creates a course with the form and shows it at the top of the list', async ({
    page,
    request,
  }) => {
    const title = uniqueTitle('form');
    await page.goto('/');
    await expect(page.getByTestId('courses-summary')).not.toHaveText(/Loading/);

    await page.getByLabel('Title').fill(title);
    await page.getByLabel('Description').fill('Created by the Playwright e2e suite');
    await page.getByLabel('Price (EUR)').fill('49.90');
    await page.getByLabel('Discount (%)').fill('10');
    await page.getByLabel('Capacity').fill('12');
    await page.getByRole('button', { name: 'Create course' }).click();

    await expect(page.getByTestId('form-message')).toHaveText(`Created "${title}" (€44.91)`);
    await expect(page.getByTestId('course').first()).toContainText(title);
    await expect(page.getByLabel('Title')).toHaveValue('');

    // The page did not just render it: the API has stored it.
    const slug = await page.getByTestId('course').first().getAttribute('data-slug');
    const id = await page.getByTestId('course').first().getAttribute('data-course-id');
    const stored = await request.get(`/api/courses/${id}`);
    expect(stored.status()).toBe(200);
    expect(await stored.json()).toMatchObject({
      title,
      slug,
      description: 'Created by the Playwright e2e suite',
      priceCents: 4_990,
      discountPercent: 10,
      capacity: 12,
      effectivePriceCents: 4_491,
    });
  });

  test('shows the API error when the course already exists', async ({ page, request }) => {
    const title = uniqueTitle('duplicate');
    expect(
      (
        await request.post('/api/courses', { data: { title, priceCents: 100, capacity: 1 } })
      ).status(),
    ).toBe(201);

    await page.goto('/');
    await page.getByLabel('Title').fill(title);
    await page.getByLabel('Price (EUR)').fill('1');
    await page.getByRole('button', { name: 'Create course' }).click();

    await expect(page.getByTestId('form-message')).toHaveText(/^Not created: .*already exists/);
    await expect(page.getByTestId('form-message')).toHaveClass('error');
    await expect(page.getByTestId('course').filter({ hasText: title })).toHaveCount(1);
  });
});

test.describe('API', () => {
  test('answers /health and /api/courses with the documented JSON', async ({ request }) => {
    const health = await request.get('/health');
    expect(health.status()).toBe(200);
    expect(await health.json()).toMatchObject({
      status: 'ok',
      checks: { database: 'ok', redis: 'ok' },
    });

    const list = await request.get('/api/courses?limit=2');
    expect(list.status()).toBe(200);
    const body = await list.json();
    expect(Array.isArray(body.data)).toBe(true);
    expect(body.pagination).toMatchObject({ limit: 2, offset: 0 });
    expect(typeof body.pagination.total).toBe('number');
  });
});

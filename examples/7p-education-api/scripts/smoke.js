#!/usr/bin/env node
'use strict';
// Smoke test for a running deployment: GET /health and GET /api/courses must both answer
// 200 with the expected JSON. Retries for up to ~10 s so it can run right after a deploy.
// Usage: API_BASE_URL=http://host:3000 node scripts/smoke.js   (Node >= 18, no dependencies)
// Tuning: SMOKE_TIMEOUT_MS (total budget, default 10000), SMOKE_DELAY_MS (between tries, 1000).

const BASE_URL = (process.env.API_BASE_URL || 'http://localhost:3000').replace(/\/+$/, '');
const BUDGET_MS = Number(process.env.SMOKE_TIMEOUT_MS) || 10000;
const DELAY_MS = Number(process.env.SMOKE_DELAY_MS) || 1000;
const REQUEST_TIMEOUT_MS = 3000;

const checks = [
  {
    name: 'GET /health',
    path: '/health',
    verify: (body) => body && body.status === 'ok',
  },
  {
    name: 'GET /api/courses',
    path: '/api/courses?limit=1',
    verify: (body) => body && Array.isArray(body.data) && body.pagination !== undefined,
  },
];

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** fetch() hides the network reason (ECONNREFUSED, timeout...) in err.cause. */
function describe(err) {
  if (!err) return 'unknown error';
  if (err.name === 'TimeoutError' || err.name === 'AbortError') return 'no answer in time';
  const cause = err.cause && (err.cause.code || err.cause.message);
  return cause ? `${err.message} (${cause})` : err.message;
}

async function runCheck(check, timeoutMs) {
  const res = await fetch(`${BASE_URL}${check.path}`, { signal: AbortSignal.timeout(timeoutMs) });
  const text = await res.text();
  if (res.status !== 200) {
    throw new Error(`${check.name}: HTTP ${res.status}: ${text.slice(0, 200)}`);
  }
  let body;
  try {
    body = JSON.parse(text);
  } catch {
    throw new Error(`${check.name}: response is not JSON: ${text.slice(0, 200)}`);
  }
  if (!check.verify(body)) {
    throw new Error(`${check.name}: unexpected body: ${text.slice(0, 200)}`);
  }
}

async function main() {
  const deadline = Date.now() + BUDGET_MS;
  let lastError = 'no attempt made';
  for (let attempt = 1; ; attempt += 1) {
    try {
      for (const check of checks) {
        const left = Math.max(deadline - Date.now(), 500);
        await runCheck(check, Math.min(REQUEST_TIMEOUT_MS, left));
        console.log(`ok   ${check.name}`);
      }
      console.log(`smoke test passed against ${BASE_URL}`);
      return;
    } catch (err) {
      lastError = describe(err);
      console.log(`try ${attempt} failed: ${lastError}`);
    }
    if (Date.now() + DELAY_MS >= deadline) break;
    await sleep(DELAY_MS);
  }
  console.error(`smoke test FAILED against ${BASE_URL} within ${BUDGET_MS} ms: ${lastError}`);
  process.exit(1);
}

main();

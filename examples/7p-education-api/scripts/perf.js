#!/usr/bin/env node
'use strict';
// `npm run test:performance`: a short load test of the BUILT app (`npm run build` first).
//
// Applies the migrations, starts `node dist/server.js` on 127.0.0.1:APP_PORT, waits for
// GET /health, seeds a few courses, warms up, then loads two read endpoints with autocannon
// for PERF_DURATION_SECONDS. Every response time comes from autocannon's `response` event, so
// p50/p95/p99 are exact (nearest rank over all samples), not read off a histogram.
// Writes reports/performance.json and prints a short summary.
//
// Exit 0 when the measurement was made (the budget gate is the pipeline's job); 1 when it
// could not measure (app did not start, no request answered); 2 on invalid settings.
//
// Env: POSTGRESQL_URI, REDIS_URI (required), APP_HOST (must be 127.0.0.1, the default),
// APP_PORT (default 3101), PERF_DURATION_SECONDS (5), PERF_CONNECTIONS (10),
// PERF_WARMUP_SECONDS (1), PERF_STARTUP_TIMEOUT_SECONDS (30).
const { spawn } = require('node:child_process');
const fs = require('node:fs');
const net = require('node:net');
const path = require('node:path');
const autocannon = require('autocannon');

const APP_DIR = path.join(__dirname, '..');
const REPORT = path.join(APP_DIR, 'reports', 'performance.json');
const LOOPBACK = '127.0.0.1';
const SEED_COURSES = 20;

class UsageError extends Error {}

// Every process this script started, so that any exit path stops them.
const children = new Set();
const running = new Set(); // autocannon instances

function intSetting(name, fallback, min, max) {
  const raw = process.env[name];
  if (raw === undefined || raw.trim() === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new UsageError(`${name} must be an integer between ${min} and ${max}, got "${raw}"`);
  }
  return value;
}

function readSettings() {
  for (const name of ['POSTGRESQL_URI', 'REDIS_URI']) {
    if (!process.env[name] || !process.env[name].trim()) {
      throw new UsageError(
        `${name} is not set: the load test starts the app against real services`,
      );
    }
  }
  const host = (process.env.APP_HOST || LOOPBACK).trim();
  if (host !== LOOPBACK) {
    throw new UsageError(`APP_HOST=${host}: test:performance only ever loads ${LOOPBACK}`);
  }
  if (!fs.existsSync(path.join(APP_DIR, 'dist', 'server.js'))) {
    throw new UsageError('dist/server.js is missing: run `npm run build` first');
  }
  return {
    host,
    port: intSetting('APP_PORT', 3101, 1, 65535),
    durationSeconds: intSetting('PERF_DURATION_SECONDS', 5, 1, 600),
    connections: intSetting('PERF_CONNECTIONS', 10, 1, 1000),
    warmupSeconds: intSetting('PERF_WARMUP_SECONDS', 1, 0, 60),
    startupTimeoutSeconds: intSetting('PERF_STARTUP_TIMEOUT_SECONDS', 30, 1, 600),
  };
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves true when something already accepts connections on host:port. */
function portInUse(host, port) {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    socket.setTimeout(1000);
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('timeout', () => {
      socket.destroy();
      resolve(false);
    });
    socket.once('error', () => resolve(false));
  });
}

/** Runs a Node script to completion with the output passed through; rejects on failure. */
function runNode(script, env) {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [script], { cwd: APP_DIR, env, stdio: 'inherit' });
    children.add(child);
    child.once('error', reject);
    child.once('exit', (code, signal) => {
      children.delete(child);
      if (code === 0) resolve();
      else reject(new Error(`${script} failed (${signal || `exit ${code}`})`));
    });
  });
}

/** The server's last lines of output, shown when it fails to start. */
function startServer(settings) {
  const tail = [];
  const remember = (chunk) => {
    for (const line of chunk.toString().split('\n')) {
      if (line.trim()) tail.push(line);
    }
    tail.splice(0, Math.max(tail.length - 40, 0));
  };
  const child = spawn(process.execPath, ['dist/server.js'], {
    cwd: APP_DIR,
    env: { ...process.env, PORT: String(settings.port), BIND_HOST: settings.host },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  children.add(child);
  child.stdout.on('data', remember);
  child.stderr.on('data', remember);
  const exited = new Promise((resolve) => {
    child.once('exit', (code, signal) => {
      children.delete(child);
      resolve(signal || `exit ${code}`);
    });
  });
  return { child, tail, exited };
}

async function waitForHealth(baseUrl, server, timeoutSeconds) {
  const deadline = Date.now() + timeoutSeconds * 1000;
  let last = 'no answer yet';
  let gone = null;
  server.exited.then((how) => {
    gone = how;
  });
  while (Date.now() < deadline) {
    if (gone) throw new Error(`the app exited before it was healthy (${gone})`);
    try {
      const res = await fetch(`${baseUrl}/health`, { signal: AbortSignal.timeout(2000) });
      if (res.status === 200) return;
      last = `HTTP ${res.status}: ${(await res.text()).slice(0, 200)}`;
    } catch (err) {
      last = err.cause && err.cause.code ? err.cause.code : err.message;
    }
    await sleep(200);
  }
  throw new Error(`GET /health did not answer 200 within ${timeoutSeconds} s (last: ${last})`);
}

/** Creates a few courses so the read endpoints return real rows; returns one course id. */
async function seed(baseUrl) {
  const run = `${Date.now().toString(36)}${process.pid.toString(36)}`;
  let id = null;
  for (let i = 1; i <= SEED_COURSES; i += 1) {
    const res = await fetch(`${baseUrl}/api/courses`, {
      method: 'POST',
      headers: { 'Content-Type': 'application/json' },
      body: JSON.stringify({
        title: `Performance seed ${run} ${i}`,
        description: 'Created by scripts/perf.js',
        priceCents: 1000 * i,
        capacity: 50,
      }),
      signal: AbortSignal.timeout(5000),
    });
    if (res.status !== 201) {
      throw new Error(`seeding: POST /api/courses answered ${res.status}: ${await res.text()}`);
    }
    id = (await res.json()).id;
  }
  return id;
}

/** Nearest-rank percentile of an ascending array (exact: one of the measured values). */
function percentile(sorted, p) {
  if (sorted.length === 0) return null;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(Math.max(rank, 1), sorted.length) - 1];
}

const round = (value, digits = 3) =>
  value === null ? null : Math.round(value * 10 ** digits) / 10 ** digits;

function latencySummary(samples) {
  const sorted = Float64Array.from(samples).sort();
  return {
    p50: round(percentile(sorted, 50)),
    p95: round(percentile(sorted, 95)),
    p99: round(percentile(sorted, 99)),
    max: round(sorted.length ? sorted[sorted.length - 1] : null),
  };
}

/**
 * Loads every endpoint at the same time, one autocannon instance each (connections split
 * between them), so each response time is attributed to its endpoint exactly.
 */
async function load(baseUrl, endpoints, connections, seconds) {
  const started = process.hrtime.bigint();
  const runs = endpoints.map((endpoint, i) => {
    const share =
      Math.floor(connections / endpoints.length) + (i < connections % endpoints.length ? 1 : 0);
    const stats = { ...endpoint, connections: share, samples: [], non2xx: 0, results: null };
    if (share === 0) return Promise.resolve(stats);
    return new Promise((resolve, reject) => {
      const instance = autocannon(
        {
          url: `${baseUrl}${endpoint.path}`,
          method: endpoint.method,
          connections: share,
          duration: seconds,
        },
        (err, result) => {
          running.delete(instance);
          if (err) reject(err);
          else resolve({ ...stats, results: result });
        },
      );
      running.add(instance);
      instance.on('response', (_client, statusCode, _bytes, responseTime) => {
        stats.samples.push(responseTime);
        if (statusCode < 200 || statusCode > 299) stats.non2xx += 1;
      });
    });
  });
  const done = await Promise.all(runs);
  return { runs: done, elapsedSeconds: Number(process.hrtime.bigint() - started) / 1e9 };
}

function report(settings, measured) {
  const all = [];
  let errors = 0;
  let non2xx = 0;
  const endpoints = measured.runs.map((run) => {
    for (const sample of run.samples) all.push(sample);
    const runErrors = run.results ? run.results.errors + run.results.timeouts : 0;
    errors += runErrors;
    non2xx += run.non2xx;
    return {
      method: run.method,
      path: run.path,
      connections: run.connections,
      requests: run.samples.length,
      requests_per_second: round(run.samples.length / measured.elapsedSeconds, 1),
      latency_ms: latencySummary(run.samples),
      errors: runErrors,
      non_2xx: run.non2xx,
    };
  });
  return {
    tool: 'autocannon',
    target: `http://${settings.host}:${settings.port}`,
    duration_s: round(measured.elapsedSeconds, 2),
    connections: settings.connections,
    warmup_s: settings.warmupSeconds,
    requests: all.length,
    requests_per_second: round(all.length / measured.elapsedSeconds, 1),
    latency_ms: latencySummary(all),
    errors,
    non_2xx: non2xx,
    endpoints,
    percentile_method: 'nearest rank over every response time',
    generated_at: new Date().toISOString(),
  };
}

function printSummary(result) {
  const ms = (value) => (value === null ? '-' : value.toFixed(2));
  const lat = result.latency_ms;
  console.log(
    `performance: ${result.requests} requests in ${result.duration_s.toFixed(2)} s ` +
      `(${result.requests_per_second} req/s, ${result.connections} connections), ` +
      `${result.errors} errors, ${result.non_2xx} non-2xx`,
  );
  console.log(
    `latency ms: p50 ${ms(lat.p50)}  p95 ${ms(lat.p95)}  p99 ${ms(lat.p99)}  max ${ms(lat.max)}`,
  );
  for (const e of result.endpoints) {
    console.log(
      `  ${`${e.method} ${e.path}`.padEnd(28)} ${String(e.requests).padStart(7)} req  ` +
        `p50 ${ms(e.latency_ms.p50)}  p95 ${ms(e.latency_ms.p95)}  p99 ${ms(e.latency_ms.p99)}` +
        (e.errors || e.non_2xx ? `  errors ${e.errors}  non-2xx ${e.non_2xx}` : ''),
    );
  }
  console.log(`report: ${path.relative(APP_DIR, REPORT)}`);
}

/** Stops the load and every child: SIGTERM, then SIGKILL after 5 s. */
async function cleanup() {
  for (const instance of running) instance.stop();
  await Promise.all(
    [...children].map(
      (child) =>
        new Promise((resolve) => {
          if (child.exitCode !== null || child.signalCode !== null) return resolve();
          const force = setTimeout(() => child.kill('SIGKILL'), 5000);
          child.once('exit', () => {
            clearTimeout(force);
            resolve();
          });
          child.kill('SIGTERM');
        }),
    ),
  );
}

// Last resort if the process exits some other way: never leave the server behind.
process.on('exit', () => {
  for (const child of children) child.kill('SIGKILL');
});

let interrupted = false;

/** Stops the load and the app, then exits with `code`; reports nothing of the partial run. */
function interrupt(reason, code) {
  if (interrupted) return;
  interrupted = true;
  console.error(`test:performance: ${reason}, stopping the app`);
  cleanup().finally(() => process.exit(code));
}

process.on('SIGINT', () => interrupt('SIGINT received', 130));
process.on('SIGTERM', () => interrupt('SIGTERM received', 143));
process.on('SIGHUP', () => interrupt('SIGHUP received', 129));

// `npm run` does not pass SIGTERM on to its script: when npm is killed this process is
// reparented. Stop then too, so the app it started does not outlive the run.
const parentPid = process.ppid;
setInterval(() => {
  if (process.ppid !== parentPid) interrupt('parent process exited', 129);
}, 500).unref();

async function main() {
  const settings = readSettings();
  const baseUrl = `http://${settings.host}:${settings.port}`;
  if (await portInUse(settings.host, settings.port)) {
    throw new Error(`${baseUrl} is already in use: set APP_PORT to a free port`);
  }

  await runNode('scripts/migrate.js', process.env);
  const server = startServer(settings);
  try {
    await waitForHealth(baseUrl, server, settings.startupTimeoutSeconds);
  } catch (err) {
    if (server.tail.length) console.error(`app output:\n  ${server.tail.join('\n  ')}`);
    throw err;
  }
  const courseId = await seed(baseUrl);
  const endpoints = [
    { method: 'GET', path: '/api/courses?limit=20' },
    { method: 'GET', path: `/api/courses/${courseId}` },
  ];

  if (settings.warmupSeconds > 0) {
    await load(baseUrl, endpoints, settings.connections, settings.warmupSeconds);
  }
  const measured = await load(baseUrl, endpoints, settings.connections, settings.durationSeconds);
  // A signal cut the run short (and may have stopped the app): no report of a partial run.
  if (interrupted) return;
  const result = report(settings, measured);
  fs.mkdirSync(path.dirname(REPORT), { recursive: true });
  fs.writeFileSync(REPORT, `${JSON.stringify(result, null, 2)}\n`);
  printSummary(result);
  if (result.requests === 0) {
    throw new Error('no request was answered during the measurement');
  }
}

main()
  .then(() => cleanup())
  .then(() => {
    if (!interrupted) process.exit(0);
  })
  .catch(async (err) => {
    if (interrupted) return;
    console.error(`test:performance: could not measure: ${err.message}`);
    await cleanup();
    process.exit(err instanceof UsageError ? 2 : 1);
  });

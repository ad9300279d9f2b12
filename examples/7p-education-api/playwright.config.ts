import { existsSync } from 'node:fs';
import { defineConfig } from '@playwright/test';

// `npm run test:e2e`: Playwright drives headless Chromium against the BUILT app
// (`npm run build` first). The pipeline sets APP_HOST/APP_PORT, POSTGRESQL_URI and REDIS_URI;
// the defaults let a developer run it by hand. Browsers are never downloaded: Playwright
// uses the system Chromium (Debian package `chromium`, or CHROMIUM_PATH).
const host = process.env.APP_HOST?.trim() || '127.0.0.1';
const port = process.env.APP_PORT?.trim() || '3100';
const baseURL = `http://${host}:${port}`;
const chromiumPath = process.env.CHROMIUM_PATH?.trim() || '/usr/bin/chromium';

// A missing CHROMIUM_PATH fails the launch with "executable doesn't exist at <path>".
if (!process.env.POSTGRESQL_URI?.trim() || !process.env.REDIS_URI?.trim()) {
  throw new Error(
    'POSTGRESQL_URI and REDIS_URI must be set: the e2e tests start the app against real services',
  );
}
if (!existsSync('dist/server.js')) {
  throw new Error('dist/server.js is missing: run `npm run build` before `npm run test:e2e`');
}

export default defineConfig({
  testDir: './e2e',
  testMatch: '**/*.spec.ts',
  // Artifacts (screenshot, trace) are kept for failed tests only.
  outputDir: 'reports/e2e-artifacts',
  fullyParallel: false,
  workers: 1,
  retries: 0,
  forbidOnly: Boolean(process.env.CI),
  timeout: 30_000,
  globalTimeout: 5 * 60_000,
  expect: { timeout: 5_000 },
  reporter: [['list'], ['junit', { outputFile: 'reports/junit/e2e.xml' }]],
  use: {
    baseURL,
    browserName: 'chromium',
    headless: true,
    screenshot: 'only-on-failure',
    trace: 'retain-on-failure',
    launchOptions: {
      executablePath: chromiumPath,
      args: [
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-component-update',
        '--disable-sync',
        '--no-first-run',
        '--disable-quic',
      ],
    },
  },
  projects: [{ name: 'chromium' }],
  webServer: {
    // Migrations first (a failure stops here with its own message), then the built server,
    // which also stops by itself if this runner is killed (see scripts/e2e-server.js).
    command: 'node scripts/e2e-server.js',
    url: `${baseURL}/health`,
    // Never test a server someone else left on the port: fail if it is taken.
    reuseExistingServer: false,
    timeout: 60_000,
    env: { PORT: port, BIND_HOST: host, E2E_RUNNER_PID: String(process.pid) },
    stdout: 'pipe',
    stderr: 'pipe',
    // SIGTERM to the server's process group, SIGKILL if it has not exited after 5 s.
    gracefulShutdown: { signal: 'SIGTERM', timeout: 5_000 },
  },
});

#!/usr/bin/env node
'use strict';
// The app as `npm run test:e2e` runs it (playwright.config.ts, webServer): applies the
// migrations, then runs the BUILT server (dist/server.js) in this same process.
//
// Playwright starts its webServer in a process group of its own and stops it only when the
// runner ends normally or on Ctrl-C. When the runner is killed instead (SIGTERM/SIGKILL to
// its group, e.g. a cancelled CI stage), the server would keep the port and the database
// connections. So this process watches the runner (E2E_RUNNER_PID) and shuts the server
// down the same way SIGTERM does as soon as the runner is gone.
const { spawnSync } = require('node:child_process');
const path = require('node:path');

const APP_DIR = path.join(__dirname, '..');

const migrate = spawnSync(process.execPath, [path.join(__dirname, 'migrate.js')], {
  cwd: APP_DIR,
  stdio: 'inherit',
});
if (migrate.status !== 0) process.exit(migrate.status || 1);

const runnerPid = Number(process.env.E2E_RUNNER_PID);
if (Number.isInteger(runnerPid) && runnerPid > 1) {
  const watchdog = setInterval(() => {
    try {
      process.kill(runnerPid, 0);
    } catch {
      console.error(`e2e-server: test runner ${runnerPid} is gone, shutting down`);
      clearInterval(watchdog);
      process.kill(process.pid, 'SIGTERM');
    }
  }, 500);
  watchdog.unref();
}

require(path.join(APP_DIR, 'dist', 'server.js'));

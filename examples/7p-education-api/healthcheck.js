'use strict';
// Docker HEALTHCHECK: exit 0 when GET /health answers 200 within the timeout, else 1. No deps.
const http = require('node:http');

const port = Number(process.env.PORT) || 3000;
const request = http.get({ host: '127.0.0.1', port, path: '/health', timeout: 2500 }, (res) => {
  res.resume();
  process.exit(res.statusCode === 200 ? 0 : 1);
});
request.on('timeout', () => {
  request.destroy(new Error('timed out'));
});
request.on('error', (err) => {
  console.error(`healthcheck failed: ${err.message}`);
  process.exit(1);
});

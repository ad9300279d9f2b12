const { jestConfig } = require('./jest.base.config');

/** @type {import('jest').Config} */
module.exports = {
  ...jestConfig('integration'),
  testMatch: ['<rootDir>/tests/integration/**/*.test.ts'],
  globalSetup: '<rootDir>/tests/setup/require-services.js',
  testTimeout: 20000,
  // Integration tests target the data layer: PostgreSQL access and the Redis cache.
  collectCoverageFrom: ['<rootDir>/src/db/**/*.ts', '<rootDir>/src/cache/**/*.ts'],
};

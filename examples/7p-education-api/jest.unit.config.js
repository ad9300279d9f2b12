const { jestConfig } = require('./jest.base.config');

/** @type {import('jest').Config} */
module.exports = {
  ...jestConfig('unit'),
  testMatch: ['<rootDir>/src/**/__tests__/**/*.test.ts'],
  // Unit tests cover the pure modules: no database, no Redis, no HTTP.
  collectCoverageFrom: ['<rootDir>/src/lib/**/*.ts', '<rootDir>/src/config.ts', '!**/__tests__/**'],
};

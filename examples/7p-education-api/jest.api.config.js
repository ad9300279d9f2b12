const { jestConfig } = require('./jest.base.config');

/** @type {import('jest').Config} */
module.exports = {
  ...jestConfig('api'),
  testMatch: ['<rootDir>/tests/api/**/*.test.ts'],
  globalSetup: '<rootDir>/tests/setup/require-services.js',
  testTimeout: 20000,
  collectCoverageFrom: ['<rootDir>/src/**/*.ts', '!<rootDir>/src/server.ts', '!**/__tests__/**'],
};

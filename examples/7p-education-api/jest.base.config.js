// Shared Jest settings; each suite has its own jest.<suite>.config.js on top of this.
/**
 * @param {string} suite unit | integration | api
 * @returns {import('jest').Config}
 */
function jestConfig(suite) {
  return {
    displayName: suite,
    rootDir: __dirname,
    testEnvironment: 'node',
    transform: {
      '^.+\\.ts$': ['ts-jest', { tsconfig: '<rootDir>/tsconfig.json' }],
    },
    moduleFileExtensions: ['ts', 'js', 'json'],
    collectCoverage: true,
    coverageDirectory: `coverage/${suite}`,
    coverageReporters: ['json-summary', 'lcov', 'text-summary'],
    // No coverageThreshold on purpose: the CI system enforces coverage itself.
    reporters: [
      'default',
      [
        'jest-junit',
        {
          outputDirectory: 'reports/junit',
          outputName: `${suite}.xml`,
          suiteName: `7p-education-api ${suite}`,
          addFileAttribute: 'true',
        },
      ],
    ],
  };
}

module.exports = { jestConfig };

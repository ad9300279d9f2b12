// Jest globalSetup for the integration and API suites: they need real services.
module.exports = async function requireServices() {
  const missing = ['POSTGRESQL_URI', 'REDIS_URI'].filter(
    (name) => !process.env[name] || !process.env[name].trim(),
  );
  if (missing.length > 0) {
    throw new Error(
      `${missing.join(' and ')} ${missing.length > 1 ? 'are' : 'is'} not set. ` +
        'These tests need a real PostgreSQL and Redis, e.g.\n' +
        '  POSTGRESQL_URI=postgresql://localhost:5432/education \\\n' +
        `  REDIS_URI=redis://localhost:6379 npm run ${process.env.npm_lifecycle_event || 'test:integration'}`,
    );
  }
};

import { DEFAULT_CACHE_PREFIX } from './lib/cacheKeys';

export interface Config {
  port: number;
  /** Interface to listen on (BIND_HOST); undefined = every interface, Node's default. */
  host: string | undefined;
  postgresUri: string;
  redisUri: string;
  cacheTtlSeconds: number;
  cachePrefix: string;
}

export class ConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ConfigError';
  }
}

function positiveInt(name: string, raw: string | undefined, fallback: number, max: number): number {
  if (raw === undefined || raw.trim() === '') return fallback;
  const value = Number(raw);
  if (!Number.isInteger(value) || value < 1 || value > max) {
    throw new ConfigError(`${name} must be an integer between 1 and ${max}, got "${raw}"`);
  }
  return value;
}

function required(name: string, raw: string | undefined): string {
  if (raw === undefined || raw.trim() === '') {
    throw new ConfigError(`${name} is not set (e.g. ${name}=${exampleFor(name)})`);
  }
  return raw.trim();
}

function exampleFor(name: string): string {
  return name === 'REDIS_URI' ? 'redis://localhost:6379' : 'postgresql://localhost:5432/education';
}

/** Reads the service configuration from environment variables. */
export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  return {
    port: positiveInt('PORT', env.PORT, 3000, 65535),
    host: env.BIND_HOST?.trim() || undefined,
    postgresUri: required('POSTGRESQL_URI', env.POSTGRESQL_URI),
    redisUri: required('REDIS_URI', env.REDIS_URI),
    cacheTtlSeconds: positiveInt('CACHE_TTL_SECONDS', env.CACHE_TTL_SECONDS, 60, 86_400),
    cachePrefix: env.CACHE_PREFIX?.trim() || DEFAULT_CACHE_PREFIX,
  };
}

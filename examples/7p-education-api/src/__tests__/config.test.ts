import { ConfigError, loadConfig } from '../config';
import { DEFAULT_CACHE_PREFIX } from '../lib/cacheKeys';

const base = {
  POSTGRESQL_URI: 'postgresql://edu:edu@db:5432/education', // pragma: allowlist secret
  REDIS_URI: 'redis://cache:6379',
};

describe('loadConfig', () => {
  it('reads the URIs and applies defaults', () => {
    expect(loadConfig({ ...base })).toEqual({
      port: 3000,
      host: undefined,
      postgresUri: base.POSTGRESQL_URI,
      redisUri: base.REDIS_URI,
      cacheTtlSeconds: 60,
      cachePrefix: DEFAULT_CACHE_PREFIX,
    });
  });

  it('honours PORT, CACHE_TTL_SECONDS and CACHE_PREFIX', () => {
    const config = loadConfig({
      ...base,
      PORT: '8080',
      CACHE_TTL_SECONDS: '5',
      CACHE_PREFIX: 'staging',
    });
    expect(config.port).toBe(8080);
    expect(config.cacheTtlSeconds).toBe(5);
    expect(config.cachePrefix).toBe('staging');
  });

  it('listens on BIND_HOST when it is set, on every interface otherwise', () => {
    expect(loadConfig({ ...base, BIND_HOST: ' 127.0.0.1 ' }).host).toBe('127.0.0.1');
    expect(loadConfig({ ...base, BIND_HOST: '' }).host).toBeUndefined();
  });

  it('treats an empty PORT as unset', () => {
    expect(loadConfig({ ...base, PORT: '' }).port).toBe(3000);
  });

  it.each(['0', '70000', 'abc', '3.5'])('rejects PORT=%p', (port) => {
    expect(() => loadConfig({ ...base, PORT: port })).toThrow(ConfigError);
  });

  it('names the missing variable', () => {
    expect(() => loadConfig({ REDIS_URI: base.REDIS_URI })).toThrow(/POSTGRESQL_URI is not set/);
    expect(() => loadConfig({ POSTGRESQL_URI: base.POSTGRESQL_URI, REDIS_URI: ' ' })).toThrow(
      /REDIS_URI is not set \(e\.g\. REDIS_URI=redis:\/\//,
    );
  });
});

import { createClient } from 'redis';

/** The small slice of a key-value cache the app needs; backed by Redis in production. */
export interface Cache {
  get(key: string): Promise<string | null>;
  set(key: string, value: string, ttlSeconds: number): Promise<void>;
  del(key: string): Promise<void>;
  ping(): Promise<void>;
}

export type RedisClient = ReturnType<typeof createClient>;

/**
 * A Redis client that fails fast while disconnected (no offline queue), so a Redis outage
 * degrades the cache instead of hanging requests, and keeps reconnecting in the background.
 */
export function createRedisClient(url: string): RedisClient {
  const client = createClient({
    url,
    disableOfflineQueue: true,
    socket: {
      connectTimeout: 5_000,
      reconnectStrategy: (retries: number) => Math.min(100 * 2 ** retries, 5_000),
    },
  });
  client.on('error', (err: Error) => {
    // Without a listener node-redis would crash the process on connection errors.
    if (process.env.NODE_ENV !== 'test') console.error(`redis: ${err.message}`);
  });
  return client;
}

export class RedisCache implements Cache {
  constructor(private readonly client: RedisClient) {}

  async get(key: string): Promise<string | null> {
    return this.client.get(key);
  }

  async set(key: string, value: string, ttlSeconds: number): Promise<void> {
    await this.client.set(key, value, { EX: ttlSeconds });
  }

  async del(key: string): Promise<void> {
    await this.client.del(key);
  }

  async ping(): Promise<void> {
    const reply = await this.client.ping();
    if (reply !== 'PONG') throw new Error(`unexpected PING reply: ${reply}`);
  }
}

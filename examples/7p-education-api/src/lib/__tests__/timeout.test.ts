import { TimeoutError, withTimeout } from '../timeout';

describe('withTimeout', () => {
  it('passes through a value that arrives in time', async () => {
    await expect(withTimeout(Promise.resolve('pong'), 100)).resolves.toBe('pong');
  });

  it('passes through a rejection that arrives in time', async () => {
    await expect(withTimeout(Promise.reject(new Error('boom')), 100)).rejects.toThrow('boom');
  });

  it('rejects with TimeoutError when the promise is too slow', async () => {
    const never = new Promise<string>(() => undefined);
    const result = withTimeout(never, 20, 'redis ping');
    await expect(result).rejects.toBeInstanceOf(TimeoutError);
    await expect(result).rejects.toThrow('redis ping timed out after 20 ms');
  });
});

import { badRequest, conflict, HttpError, notFound } from '../errors';

describe('HttpError helpers', () => {
  it('carry status, message and details', () => {
    const err = badRequest('invalid course', ['title is required']);
    expect(err).toBeInstanceOf(HttpError);
    expect(err).toBeInstanceOf(Error);
    expect(err.status).toBe(400);
    expect(err.message).toBe('invalid course');
    expect(err.details).toEqual(['title is required']);
  });

  it('map to 404 and 409', () => {
    expect(notFound('course 9 not found').status).toBe(404);
    expect(conflict('already enrolled').status).toBe(409);
    expect(conflict('already enrolled').details).toBeUndefined();
  });
});

import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { problemBody, PROBLEM_CONTENT_TYPE, ERRORS, type ErrorCode } from '../errors';

/** Answers an admin request with a problem+json body, in the same shape as the gateway's errors. */
export function adminProblem(request: FastifyRequest, reply: FastifyReply, code: ErrorCode, detail?: string): FastifyReply {
  return reply
    .code(ERRORS[code].status)
    .type(PROBLEM_CONTENT_TYPE)
    .header('cache-control', 'no-store')
    .send(problemBody(code, String(request.id), detail));
}

const BEARER = /^bearer +(\S+) *$/i;

/**
 * An onRequest hook that admits only `Authorization: Bearer <admin.token>`. Both sides are
 * hashed first so the comparison is constant-time and on equal lengths whatever was sent.
 */
export function adminTokenGuard(token: string): (request: FastifyRequest, reply: FastifyReply) => Promise<void> {
  const expected = createHash('sha256').update(token).digest();
  return async (request, reply) => {
    const m = BEARER.exec(request.headers.authorization ?? '');
    const presented = createHash('sha256').update(m ? m[1] : '').digest();
    if (m === null || !timingSafeEqual(presented, expected)) {
      reply.header('www-authenticate', 'Bearer realm="admin"');
      await adminProblem(request, reply, 'UNAUTHENTICATED', 'a valid admin token is required');
    }
  };
}

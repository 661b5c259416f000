import type { FastifyInstance } from 'fastify';
import { parseExpiry, PREFIX_PATTERN, ReadOnlyStoreError, type KeyRecord, type KeyStore } from '../plugins/auth/api-keys';
import type { ConsumerDirectory } from '../plugins/auth/consumers';
import { adminProblem, adminTokenGuard } from './token';

export interface KeyRouteDeps {
  store: KeyStore;
  consumers: ConsumerDirectory;
  /** admin.token; without it the key routes are not registered at all. */
  token: string | undefined;
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

function describe(r: KeyRecord, now: number) {
  return { prefix: r.prefix, consumer: r.consumer, created: iso(r.created), expires: iso(r.expires), expired: r.expires !== null && now >= r.expires };
}

/**
 * API key lifecycle on the admin listener, behind the admin token:
 *   POST   /admin/consumers/:id/keys   {"expires": "90d" | ISO date}  → 201, the key shown once
 *   GET    /admin/consumers/:id/keys   → the consumer's keys (prefix, created, expires)
 *   DELETE /admin/keys/:prefix         → 204; every replica refuses the key within a second
 */
export function registerKeyRoutes(admin: FastifyInstance, deps: KeyRouteDeps): void {
  const { token, store, consumers } = deps;
  if (token === undefined) return;
  void admin.register(async (scope) => {
    scope.addHook('onRequest', adminTokenGuard(token));
    // `curl -X POST -H 'content-type: application/json'` with no body is a normal way to ask for
    // a key without options: an empty body is no body, not an error.
    scope.addContentTypeParser('application/json', { parseAs: 'string' }, (_req, body, done) => {
      if (body === '') return done(null, undefined);
      try {
        done(null, JSON.parse(body as string));
      } catch {
        done(Object.assign(new Error('the body is not valid JSON'), { statusCode: 400 }));
      }
    });
    scope.setErrorHandler((err: Error & { statusCode?: number }, request, reply) => {
      if (err instanceof ReadOnlyStoreError) return adminProblem(request, reply, 'KEY_STORE_READ_ONLY', err.message);
      if (err.statusCode !== undefined && err.statusCode < 500) return adminProblem(request, reply, 'BAD_REQUEST', err.message);
      request.log.warn({ err: { message: err.message } }, 'API key store operation failed');
      return adminProblem(request, reply, 'STORE_UNAVAILABLE', 'the API key store did not answer');
    });

    scope.post<{ Params: { id: string }; Body: { expires?: unknown } | undefined }>('/admin/consumers/:id/keys', async (request, reply) => {
      const { id } = request.params;
      if (!consumers.has(id)) return adminProblem(request, reply, 'ADMIN_NOT_FOUND', `no consumer "${id}" in the configuration`);
      const body = request.body ?? {};
      if (typeof body !== 'object' || Array.isArray(body)) return adminProblem(request, reply, 'BAD_REQUEST', 'the body must be a JSON object');
      let expires: number | null = null;
      if (body.expires !== undefined && body.expires !== null) {
        if (typeof body.expires !== 'string') return adminProblem(request, reply, 'BAD_REQUEST', 'expires must be a string');
        try {
          expires = parseExpiry(body.expires);
        } catch (err) {
          return adminProblem(request, reply, 'BAD_REQUEST', (err as Error).message);
        }
      }
      const { key, record } = await store.create(id, expires);
      request.log.info({ consumer: id, prefix: record.prefix }, 'API key created');
      reply.code(201).header('cache-control', 'no-store');
      return { key, ...describe(record, Date.now()) };
    });

    scope.get<{ Params: { id: string } }>('/admin/consumers/:id/keys', async (request, reply) => {
      const { id } = request.params;
      if (!consumers.has(id)) return adminProblem(request, reply, 'ADMIN_NOT_FOUND', `no consumer "${id}" in the configuration`);
      const now = Date.now();
      return { consumer: id, keys: (await store.list(id)).map((r) => describe(r, now)) };
    });

    scope.delete<{ Params: { prefix: string } }>('/admin/keys/:prefix', async (request, reply) => {
      const { prefix } = request.params;
      if (!PREFIX_PATTERN.test(prefix)) return adminProblem(request, reply, 'BAD_REQUEST', 'a key prefix looks like gk_abcdefgh');
      if (!(await store.revoke(prefix))) return adminProblem(request, reply, 'ADMIN_NOT_FOUND', `no key with prefix ${prefix}`);
      request.log.info({ prefix }, 'API key revoked');
      return reply.code(204).send();
    });
  });
}

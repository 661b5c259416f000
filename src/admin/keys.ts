import type { FastifyInstance } from 'fastify';
import { parseExpiry, PREFIX_PATTERN, ReadOnlyStoreError, type KeyRecord, type KeyStore } from '../plugins/auth/api-keys';
import type { GatewayConfig } from '../config/schema';
import { problem } from './server';

export interface KeyRouteDeps {
  /** The configuration serving now (consumers come from it). */
  config(): Readonly<GatewayConfig>;
  /** The key store of that configuration. */
  store(): KeyStore;
}

const iso = (ms: number | null) => (ms === null ? null : new Date(ms).toISOString());

function describe(r: KeyRecord, now: number) {
  return { prefix: r.prefix, consumer: r.consumer, created: iso(r.created), expires: iso(r.expires), expired: r.expires !== null && now >= r.expires };
}

/**
 * API key lifecycle on the admin listener (behind the admin token, like all of /admin/):
 *   POST   /admin/consumers/:id/keys   {"expires": "90d" | ISO date}  → 201, the key shown once
 *   GET    /admin/consumers/:id/keys   → the consumer's keys (prefix, created, expires)
 *   DELETE /admin/keys/:prefix         → 204; every replica refuses the key within a second
 */
export function registerKeyRoutes(admin: FastifyInstance, deps: KeyRouteDeps): void {
  const known = (id: string) => deps.config().consumers.some((c) => c.id === id);
  void admin.register(async (scope) => {
    scope.setErrorHandler((err: Error & { statusCode?: number }, request, reply) => {
      if (err instanceof ReadOnlyStoreError) return problem(reply, request, 'KEY_STORE_READ_ONLY', err.message);
      if (err.statusCode !== undefined && err.statusCode < 500) return problem(reply, request, 'BAD_REQUEST', err.message);
      request.log.warn({ err: { message: err.message } }, 'API key store operation failed');
      return problem(reply, request, 'STORE_UNAVAILABLE', 'the API key store did not answer');
    });

    scope.post<{ Params: { id: string }; Body: { expires?: unknown } | undefined }>('/admin/consumers/:id/keys', async (request, reply) => {
      const { id } = request.params;
      if (!known(id)) return problem(reply, request, 'ADMIN_NOT_FOUND', `no consumer "${id}" in the configuration`);
      const body = request.body ?? {};
      if (typeof body !== 'object' || Array.isArray(body)) return problem(reply, request, 'BAD_REQUEST', 'the body must be a JSON object');
      let expires: number | null = null;
      if (body.expires !== undefined && body.expires !== null) {
        if (typeof body.expires !== 'string') return problem(reply, request, 'BAD_REQUEST', 'expires must be a string');
        try {
          expires = parseExpiry(body.expires);
        } catch (err) {
          return problem(reply, request, 'BAD_REQUEST', (err as Error).message);
        }
      }
      const { key, record } = await deps.store().create(id, expires);
      request.log.info({ consumer: id, prefix: record.prefix }, 'API key created');
      reply.code(201).header('cache-control', 'no-store');
      return { key, ...describe(record, Date.now()) };
    });

    scope.get<{ Params: { id: string } }>('/admin/consumers/:id/keys', async (request, reply) => {
      const { id } = request.params;
      if (!known(id)) return problem(reply, request, 'ADMIN_NOT_FOUND', `no consumer "${id}" in the configuration`);
      const now = Date.now();
      return { consumer: id, keys: (await deps.store().list(id)).map((r) => describe(r, now)) };
    });

    scope.delete<{ Params: { prefix: string } }>('/admin/keys/:prefix', async (request, reply) => {
      const { prefix } = request.params;
      if (!PREFIX_PATTERN.test(prefix)) return problem(reply, request, 'BAD_REQUEST', 'a key prefix looks like gk_abcdefgh (ik_abcdefgh for an imported key)');
      if (!(await deps.store().revoke(prefix))) return problem(reply, request, 'ADMIN_NOT_FOUND', `no key with prefix ${prefix}`);
      request.log.info({ prefix }, 'API key revoked');
      return reply.code(204).send();
    });
  });
}

import { createHash, createHmac, randomBytes } from 'node:crypto';

/**
 * Credentials for the auth scenarios, made here with node:crypto rather than by the gateway's own
 * code, so the bench also checks that independently minted credentials are accepted (non-2xx > 0
 * in the table would show they are not).
 */
export const BENCH_JWT_SECRET = randomBytes(32).toString('base64url');

const b64url = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');

export function benchJwt(): string {
  const input = `${b64url({ alg: 'HS256', typ: 'JWT' })}.${b64url({ sub: 'bench-user', roles: ['reader'], exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  return `${input}.${createHmac('sha256', BENCH_JWT_SECRET).update(input).digest('base64url')}`;
}

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';
const prefix = `gk_${Array.from(randomBytes(8), (b) => BASE32[b & 31]).join('')}`;
export const BENCH_API_KEY = `${prefix}_${randomBytes(32).toString('base64url')}`;

/** The consumer holding BENCH_API_KEY, as it appears in the configuration (hash only). */
export const BENCH_CONSUMER = {
  id: 'bench-consumer',
  roles: ['reader'],
  apiKeys: [{ prefix, sha256: createHash('sha256').update(BENCH_API_KEY).digest('hex') }],
};

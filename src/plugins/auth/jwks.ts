import { createPublicKey, type JsonWebKey } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import type { FastifyBaseLogger } from 'fastify';
import { Agent } from 'undici';
import type { Resource } from '../types';
import type { CounterFamily } from '../../observability/fast-metrics';
import { AuthFailure } from './failure';
import { algorithmsForKey, keyVerifier, type ClaimRules, type KeyVerifier } from './jwt';
import type { JwtAlgorithm } from './schema';

export interface JwksOptions {
  url: string;
  cooldownMs: number;
  refreshMs: number;
  timeoutMs: number;
  maxBytes: number;
  algorithms: readonly JwtAlgorithm[];
  rules: ClaimRules;
  log: FastifyBaseLogger;
  fetches: CounterFamily;
}

/** Keys of one JWKS: a verifier per `kid` ('' for a key without one). */
type KeySet = Map<string, KeyVerifier>;

/**
 * The keys of the configured JWKS endpoint, which is the only place keys are ever fetched from.
 * Fetched at start-up and every refreshMs; a token with an unknown `kid` triggers one refetch at
 * most once per cooldown (concurrent requests share it). A failed fetch keeps the cached keys.
 */
export class JwksKeySource implements Resource {
  readonly name = 'jwks';
  private keys: KeySet = new Map();
  private readonly agent: Agent;
  private readonly origin: string;
  private readonly path: string;
  private lastAttemptAt = -Infinity;
  private lastFetchOk = false;
  private inflight: Promise<boolean> | null = null;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;

  constructor(private readonly opts: JwksOptions) {
    const u = new URL(opts.url);
    this.origin = u.origin;
    this.path = u.pathname + u.search;
    this.agent = new Agent({
      connect: { timeout: opts.timeoutMs },
      headersTimeout: opts.timeoutMs,
      bodyTimeout: opts.timeoutMs,
      connections: 2,
    });
  }

  async init(): Promise<void> {
    await this.refresh();
    this.timer = setInterval(() => void this.refresh(), this.opts.refreshMs);
    this.timer.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await this.agent.close();
  }

  /** The verifier for `kid`, or null when the cached set has no such key. */
  verifierFor(kid: string | undefined): KeyVerifier | null {
    if (kid === undefined) {
      // Without a kid only an unambiguous set can say which key signed the token.
      if (this.keys.size !== 1) return this.keys.get('') ?? null;
      return this.keys.values().next().value!;
    }
    return this.keys.get(kid) ?? null;
  }

  /**
   * Called when the cached set has no key for `kid`. Refetches unless a fetch happened within
   * the cooldown. Throws (or rejects with) AuthFailure: 503 when the endpoint cannot be reached
   * and so the key cannot be known, 401 when the endpoint answered and has no such key.
   */
  refetchFor(kid: string | undefined): Promise<KeyVerifier> {
    if (kid === undefined && this.keys.size > 1) throw new AuthFailure('the token has no kid and the key set has several keys');
    const fresh = performance.now() - this.lastAttemptAt < this.opts.cooldownMs;
    if (fresh && this.inflight === null) throw this.missing();
    return this.refresh().then(() => {
      const v = this.verifierFor(kid);
      if (v === null) throw this.missing();
      return v;
    });
  }

  private missing(): AuthFailure {
    return this.lastFetchOk
      ? new AuthFailure('the token was signed by a key that is not in the key set')
      : new AuthFailure('the key set cannot be fetched', true);
  }

  /** One fetch at a time; resolves true when the set was replaced. Never rejects. */
  private refresh(): Promise<boolean> {
    if (this.closed) return Promise.resolve(false);
    this.inflight ??= this.fetchKeys().finally(() => {
      this.inflight = null;
    });
    return this.inflight;
  }

  private async fetchKeys(): Promise<boolean> {
    this.lastAttemptAt = performance.now();
    try {
      const doc = await this.download();
      const keys = this.parse(doc);
      if (keys.size === 0) throw new Error('the key set holds no key usable with the configured algorithms');
      this.keys = keys;
      this.lastFetchOk = true;
      this.opts.fetches.child('ok').inc();
      return true;
    } catch (err) {
      this.lastFetchOk = false;
      this.opts.fetches.child('error').inc();
      this.opts.log.warn({ err: { message: (err as Error).message }, url: this.opts.url, cachedKeys: this.keys.size }, 'JWKS fetch failed; keeping cached keys');
      return false;
    }
  }

  private async download(): Promise<unknown> {
    const { statusCode, body } = await this.agent.request({
      origin: this.origin,
      path: this.path,
      method: 'GET',
      headers: { accept: 'application/jwk-set+json, application/json' },
      signal: AbortSignal.timeout(this.opts.timeoutMs),
    });
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of body as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > this.opts.maxBytes) {
        body.destroy();
        throw new Error(`the key set is larger than ${this.opts.maxBytes} bytes`);
      }
      chunks.push(chunk);
    }
    if (statusCode !== 200) throw new Error(`the JWKS endpoint answered ${statusCode}`);
    return JSON.parse(Buffer.concat(chunks).toString('utf8'));
  }

  private parse(doc: unknown): KeySet {
    const list = (doc as { keys?: unknown } | null)?.keys;
    if (!Array.isArray(list)) throw new Error('the document has no "keys" array');
    const out: KeySet = new Map();
    for (const jwk of list as Record<string, unknown>[]) {
      if (jwk === null || typeof jwk !== 'object') continue;
      // Symmetric keys never come from a key set: an HMAC key anyone can download is no secret.
      if (jwk.kty !== 'RSA' && jwk.kty !== 'EC' && jwk.kty !== 'OKP') continue;
      if (jwk.use !== undefined && jwk.use !== 'sig') continue;
      // A published private key is compromised: never trust it.
      if ('d' in jwk) continue;
      const kid = typeof jwk.kid === 'string' ? jwk.kid : '';
      if (out.has(kid)) continue;
      let pem: string;
      let algorithms: JwtAlgorithm[];
      try {
        const key = createPublicKey({ key: jwk as JsonWebKey, format: 'jwk' });
        algorithms = algorithmsForKey(key.asymmetricKeyType, key.asymmetricKeyDetails?.namedCurve, this.opts.algorithms);
        if (typeof jwk.alg === 'string') algorithms = algorithms.filter((a) => a === jwk.alg);
        if (algorithms.length === 0) continue;
        pem = key.export({ type: 'spki', format: 'pem' }) as string;
      } catch {
        continue;
      }
      out.set(kid, keyVerifier(pem, algorithms, this.opts.rules));
    }
    return out;
  }
}

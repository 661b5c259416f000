import { createHash } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import { ClaimsReader } from './claims';
import type { ConsumerDirectory, Verified } from './consumers';
import { AuthFailure } from './failure';
import type { IdentityHeaderNames } from './identity-headers';
import { RemoteDown, type CallerTrace, type RemoteMetrics, type RemoteService } from './remote-call';
import type { IntrospectionConfig } from './remote-schema';
import { TtlCache } from './ttl-cache';

/** A remembered introspection result. */
interface Entry {
  /** The identity of an active token, or null with the reason it was refused. */
  verified: Verified | null;
  reason: string;
  /** Reused without asking until then (Date.now() time). */
  freshUntil: number;
}

/** The largest NumericDate accepted (as in jwt.ts): 9999-12-31T23:59:59Z. */
const MAX_NUMERIC_DATE = 253402300799;

/** `application/x-www-form-urlencoded` encoding of one value (RFC 6749 Appendix B). */
function formEncode(s: string): string {
  return encodeURIComponent(s).replace(/%20/g, '+');
}

function numericDate(v: unknown, member: string): number | undefined {
  if (v === undefined) return undefined;
  if (typeof v !== 'number' || !(v >= 0 && v <= MAX_NUMERIC_DATE)) throw new AuthFailure(`the introspection member "${member}" is not a date`);
  return v * 1000;
}

/**
 * OAuth 2.0 token introspection (RFC 7662): opaque bearer tokens are sent to the authorization
 * server, which says whether they are active and whose they are. Results are cached by a hash of
 * the token (never the token itself) until the earlier of its `exp` and the configured TTL; while
 * the endpoint is down, an active result is still used until the token's `exp`.
 */
export class Introspector {
  /** Entries live until the token `exp` (active) or their freshUntil (inactive). */
  private readonly cache: TtlCache<Entry>;
  private readonly inflight = new Map<string, Promise<Verified>>();
  private readonly path: string;
  private readonly headers: string[];
  private readonly formTail: string;
  private readonly claims: ClaimsReader;

  constructor(
    private readonly cfg: IntrospectionConfig,
    private readonly service: RemoteService,
    private readonly consumers: ConsumerDirectory,
    names: IdentityHeaderNames,
    private readonly metrics: RemoteMetrics,
    private readonly maxTokenBytes: number,
    private readonly log: FastifyBaseLogger,
  ) {
    this.cache = new TtlCache(cfg.cache.maxEntries);
    this.path = service.url.pathname + service.url.search;
    this.headers = ['content-type', 'application/x-www-form-urlencoded', 'accept', 'application/json'];
    let tail = cfg.tokenTypeHint !== undefined ? `&token_type_hint=${formEncode(cfg.tokenTypeHint)}` : '';
    if (cfg.clientAuth === 'basic') {
      // RFC 6749 §2.3.1: id and secret are form-encoded before they are joined and base64-encoded.
      const basic = Buffer.from(`${formEncode(cfg.clientId)}:${formEncode(cfg.clientSecret)}`).toString('base64');
      this.headers.push('authorization', `Basic ${basic}`);
    } else {
      tail += `&client_id=${formEncode(cfg.clientId)}&client_secret=${formEncode(cfg.clientSecret)}`;
    }
    this.formTail = tail;
    this.claims = new ClaimsReader(cfg.claims, cfg.claimHeaders, names, 'the token', 'the introspection member');
  }

  /** The identity an opaque token proves; throws (or rejects with) AuthFailure. Synchronous on a cache hit. */
  authenticate(token: string, trace: CallerTrace): Verified | Promise<Verified> {
    if (token === '') throw new AuthFailure('the bearer token is empty');
    if (token.length > this.maxTokenBytes) throw new AuthFailure('the token is too large');
    const key = createHash('sha256').update(token).digest('base64url');
    const now = Date.now();
    const hit = this.cache.get(key, now);
    if (hit !== undefined && now < hit.freshUntil) {
      this.metrics.hit.inc();
      return this.decided(hit);
    }
    this.metrics.miss.inc();
    let pending = this.inflight.get(key);
    if (pending === undefined) {
      pending = this.fetch(token, key, trace).finally(() => this.inflight.delete(key));
      this.inflight.set(key, pending);
    }
    return pending;
  }

  private decided(e: Entry): Verified {
    if (e.verified === null) {
      this.metrics.deny.inc();
      throw new AuthFailure(e.reason);
    }
    this.metrics.allow.inc();
    return e.verified;
  }

  private async fetch(token: string, key: string, trace: CallerTrace): Promise<Verified> {
    let entry: Entry;
    try {
      entry = await this.ask(token, trace);
    } catch (err) {
      if (!(err instanceof RemoteDown)) throw err;
      // Kept past its TTL until the token's exp, for this: the endpoint is down and the token was active.
      const stale = this.cache.get(key, Date.now());
      if (stale !== undefined && stale.verified !== null) {
        this.metrics.stale.inc();
        return stale.verified;
      }
      this.metrics.unavailable.inc();
      throw new AuthFailure(err.message, true, true);
    }
    this.store(key, entry);
    return this.decided(entry);
  }

  private store(key: string, e: Entry): void {
    const c = this.cfg.cache;
    const now = Date.now();
    if (e.verified === null) {
      if (c.inactiveTtlMs > 0) this.cache.set(key, { ...e, freshUntil: now + c.inactiveTtlMs }, now + c.inactiveTtlMs);
      return;
    }
    if (c.ttlMs === 0) return;
    // freshUntil is already capped by exp; without exp an entry is never used stale.
    const fresh = Math.min(e.freshUntil, now + c.ttlMs);
    const until = Number.isFinite(e.freshUntil) ? e.freshUntil : fresh;
    if (fresh > now) this.cache.set(key, { ...e, freshUntil: fresh }, until);
  }

  /** One call to the endpoint; an Entry for any answer it could give, RemoteDown otherwise. */
  private async ask(token: string, trace: CallerTrace): Promise<Entry> {
    const form = `token=${formEncode(token)}${this.formTail}`;
    const answer = await this.service.call(trace, 'POST', this.path, this.headers.slice(), form);
    if (answer.status !== 200 || answer.tooLarge) {
      // The endpoint refused the gateway itself (its client credentials) or answered something else: not the caller's fault.
      this.log.warn({ status: answer.status, tooLarge: answer.tooLarge }, 'the introspection endpoint did not answer 200 with a readable body');
      throw new RemoteDown('error');
    }
    let doc: unknown;
    try {
      doc = JSON.parse(answer.body.toString('utf8'));
    } catch {
      this.log.warn('the introspection endpoint answered something that is not JSON');
      throw new RemoteDown('error');
    }
    if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) throw new RemoteDown('error');
    try {
      return this.entryOf(doc as Record<string, unknown>);
    } catch (err) {
      if (err instanceof AuthFailure) return { verified: null, reason: err.message, freshUntil: 0 };
      throw err;
    }
  }

  private entryOf(doc: Record<string, unknown>): Entry {
    if (doc.active !== true) throw new AuthFailure('the token is not active');
    const now = Date.now();
    const exp = numericDate(doc.exp, 'exp');
    const nbf = numericDate(doc.nbf, 'nbf');
    if (exp !== undefined && exp <= now) throw new AuthFailure('the token has expired');
    if (nbf !== undefined && nbf > now) throw new AuthFailure('the token is not valid yet (nbf)');
    if (this.cfg.issuer !== undefined && doc.iss !== this.cfg.issuer) throw new AuthFailure('the token issuer is not accepted');
    const aud = this.cfg.audience;
    if (aud !== undefined) {
      const got = typeof doc.aud === 'string' ? [doc.aud] : Array.isArray(doc.aud) ? doc.aud : [];
      if (!got.some((a) => typeof a === 'string' && aud.includes(a))) throw new AuthFailure('the token audience is not accepted');
    }
    const member = this.claims.names.consumer;
    let consumerId = doc[member];
    if (consumerId === undefined) consumerId = doc.client_id;
    if (typeof consumerId !== 'string' || consumerId === '') throw new AuthFailure(`the token has no "${member}" or client_id to identify the caller`);
    return {
      verified: this.claims.verified(doc, consumerId, 'introspection', this.consumers),
      reason: '',
      freshUntil: exp ?? Infinity,
    };
  }
}

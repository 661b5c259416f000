import { createHash } from 'node:crypto';
import { PassThrough } from 'node:stream';
import type { RequestContext } from '../../context';
import { GatewayError } from '../../errors';
import { union } from './claims';
import type { ConsumerDirectory, Verified } from './consumers';
import { AuthFailure } from './failure';
import { identityHeaderPairs, isHeaderValue, UnsendableIdentityError, type IdentityHeaderNames } from './identity-headers';
import { cacheControlTtl, type RemoteAnswer, type RemoteMetrics, type RemoteService } from './remote-call';
import type { ExternalAuthConfig } from './remote-schema';
import { TtlCache } from './ttl-cache';

/** The authorizer let the request through: its identity (if it named one) and the headers for the upstream. */
export interface Allowed {
  allow: true;
  verified: Verified | null;
  /** Headers copied from the answer, plus the identity headers when there is an identity. */
  headers: readonly [string, string][];
}

/** The authorizer refused: what the client gets. */
export interface Denied {
  allow: false;
  status: number;
  /** Relayed headers as name/value pairs. */
  headers: readonly string[];
  body: Buffer;
}

export type Decision = Allowed | Denied;

/** A compiled path template: literal parts and placeholders. */
type PathPart = string | ((ctx: RequestContext) => string);

function compilePath(template: string, route: string): PathPart[] {
  const parts: PathPart[] = [];
  for (const piece of template.split(/(\{(?:path|query|method|route)\})/)) {
    if (piece === '') continue;
    if (piece === '{path}') parts.push((ctx) => ctx.path);
    else if (piece === '{query}') parts.push((ctx) => ctx.query);
    else if (piece === '{method}') parts.push((ctx) => ctx.req.method ?? 'GET');
    else if (piece === '{route}') parts.push(route);
    else parts.push(piece);
  }
  return parts;
}

const LIST_SPLIT = /[\s,]+/;

function headerText(v: string | string[] | undefined): string | undefined {
  return Array.isArray(v) ? v.join(', ') : v;
}

function nameList(v: string | string[] | undefined): readonly string[] {
  const text = headerText(v);
  return text === undefined ? [] : text.split(LIST_SPLIT).filter((s) => s !== '');
}

/**
 * The external authorizer as a route's auth method: builds the call from the request, turns the
 * answer into a decision, and remembers decisions per identity (a hash of the identity-source
 * headers, which the authorizer always sees) for the TTL of the configuration or of the answer's
 * Cache-Control. Concurrent requests with one identity share one call.
 */
export class ExternalAuthorizer {
  private readonly cache: TtlCache<Decision>;
  private readonly inflight = new Map<string, Promise<Decision>>();
  private readonly sources: string[];
  /** The credential is an Authorization header: a request without one is challenged for a bearer token. */
  readonly bearer: boolean;
  private readonly forward: string[];
  private readonly copy: string[];
  private readonly relay: string[];
  private readonly consumerHeader: string | undefined;
  private readonly rolesHeader: string | undefined;
  private readonly scopesHeader: string | undefined;
  private readonly paths = new Map<string, PathPart[]>();
  private readonly template: string;

  constructor(
    private readonly cfg: ExternalAuthConfig,
    private readonly service: RemoteService,
    private readonly consumers: ConsumerDirectory,
    private readonly names: IdentityHeaderNames,
    private readonly metrics: RemoteMetrics,
  ) {
    this.cache = new TtlCache(cfg.cache.maxEntries);
    const lower = (l: readonly string[]) => l.map((h) => h.toLowerCase());
    this.sources = lower(cfg.cache.identitySources);
    this.bearer = this.sources.includes('authorization');
    this.forward = lower(cfg.forwardHeaders);
    this.copy = lower(cfg.upstreamHeaders);
    this.relay = lower(cfg.clientHeaders);
    this.consumerHeader = cfg.identity.consumerHeader?.toLowerCase();
    this.rolesHeader = cfg.identity.rolesHeader?.toLowerCase();
    this.scopesHeader = cfg.identity.scopesHeader?.toLowerCase();
    this.template = cfg.path ?? service.url.pathname + service.url.search;
  }

  /** Whether the request carries any identity source: without one, this method has no credential. */
  hasCredential(ctx: RequestContext): boolean {
    const h = ctx.req.headers;
    for (let i = 0; i < this.sources.length; i++) if (h[this.sources[i]] !== undefined) return true;
    return false;
  }

  /**
   * The decision for this request: synchronous from the cache, else from a call. Rejects with
   * RemoteDown when the authorizer cannot decide, GatewayError for a body too large to send, and
   * AuthFailure for an allowing answer whose identity cannot be forwarded.
   */
  decide(ctx: RequestContext, routeName: string): Decision | Promise<Decision> {
    const key = this.cacheKey(ctx);
    const hit = this.cache.get(key, Date.now());
    if (hit !== undefined) {
      this.metrics.hit.inc();
      return hit;
    }
    this.metrics.miss.inc();
    // A request whose body goes along is decided by its own call: its body is not part of the key.
    if (this.cfg.body.enabled && hasBody(ctx)) return this.fetch(ctx, routeName, key);
    let pending = this.inflight.get(key);
    if (pending === undefined) {
      pending = this.fetch(ctx, routeName, key).finally(() => this.inflight.delete(key));
      this.inflight.set(key, pending);
    }
    return pending;
  }

  private cacheKey(ctx: RequestContext): string {
    const h = ctx.req.headers;
    const hash = createHash('sha256');
    for (let i = 0; i < this.sources.length; i++) {
      const v = h[this.sources[i]];
      // The index keeps ("a", absent) and (absent, "a") apart.
      hash.update(`${i}:${v === undefined ? '' : headerText(v)}\n`);
    }
    return hash.digest('base64url');
  }

  private async fetch(ctx: RequestContext, routeName: string, key: string): Promise<Decision> {
    const req = ctx.req;
    const headers: string[] = [];
    for (const name of this.forward) {
      const v = req.headers[name];
      if (v === undefined) continue;
      if (Array.isArray(v)) for (const one of v) headers.push(name, one);
      else headers.push(name, v);
    }
    const method = req.method ?? 'GET';
    headers.push(
      'x-forwarded-method', method,
      'x-forwarded-uri', ctx.path + ctx.query,
      'x-forwarded-proto', (req.socket as { encrypted?: boolean }).encrypted ? 'https' : 'http',
      'x-forwarded-for', ctx.clientIp,
      'x-request-id', ctx.id,
    );
    if (req.headers.host !== undefined) headers.push('x-forwarded-host', req.headers.host);
    let body: Buffer | null = null;
    if (this.cfg.body.enabled && hasBody(ctx)) {
      body = await readBody(ctx, this.cfg.body.maxBytes);
      const type = req.headers['content-type'];
      if (type !== undefined) headers.push('content-type', type);
    }
    const callMethod = this.cfg.method === 'original' ? method : this.cfg.method;
    const answer = await this.service.call(ctx, callMethod, this.pathFor(ctx, routeName), headers, body);
    const decision = answer.status >= 200 && answer.status < 300 ? this.allowed(answer) : this.denied(answer);
    const ttl = this.ttlOf(answer, decision.allow);
    const now = Date.now();
    if (ttl > 0 && body === null) this.cache.set(key, decision, now + ttl);
    return decision;
  }

  private pathFor(ctx: RequestContext, routeName: string): string {
    let parts = this.paths.get(routeName);
    if (parts === undefined) {
      parts = compilePath(this.template, routeName);
      this.paths.set(routeName, parts);
    }
    let path = '';
    for (const p of parts) path += typeof p === 'string' ? p : p(ctx);
    return path;
  }

  private ttlOf(answer: RemoteAnswer, allow: boolean): number {
    const c = this.cfg.cache;
    const asked = cacheControlTtl(answer.headers['cache-control']);
    if (allow) return asked === null ? c.ttlMs : Math.min(asked, c.maxTtlMs);
    return asked === null ? c.denyTtlMs : Math.min(asked, c.denyTtlMs);
  }

  private allowed(answer: RemoteAnswer): Allowed {
    const h = answer.headers;
    const max = this.names.maxLength;
    const copied: [string, string][] = [];
    for (const name of this.copy) {
      const v = headerText(h[name]);
      if (v !== undefined && isHeaderValue(v, max)) copied.push([name, v]);
    }
    const consumerId = this.consumerHeader === undefined ? undefined : headerText(h[this.consumerHeader]);
    if (consumerId === undefined || consumerId === '') return { allow: true, verified: null, headers: copied };
    let roles = this.rolesHeader === undefined ? [] : nameList(h[this.rolesHeader]);
    let scopes = this.scopesHeader === undefined ? [] : nameList(h[this.scopesHeader]);
    const known = this.consumers.get(consumerId);
    if (known) {
      roles = union(roles, known.config.roles);
      scopes = union(scopes, known.config.scopes);
    }
    let headers: [string, string][];
    try {
      headers = identityHeaderPairs(this.names, consumerId, undefined, roles, copied);
    } catch (err) {
      if (err instanceof UnsendableIdentityError) throw new AuthFailure(`the authorizer's identity cannot be forwarded: ${err.message}`);
      throw err;
    }
    const verified: Verified = { identity: { consumerId, roles, scopes, method: 'external', headers }, routes: known ? known.routes : null };
    return { allow: true, verified, headers };
  }

  private denied(answer: RemoteAnswer): Denied {
    const keepBody = !answer.tooLarge && answer.body.length <= this.cfg.denyBodyMaxBytes;
    const headers: string[] = [];
    for (const name of this.relay) {
      if (!keepBody && name === 'content-type') continue;
      const v = answer.headers[name];
      if (v === undefined) continue;
      if (Array.isArray(v)) for (const one of v) headers.push(name, one);
      else headers.push(name, v);
    }
    return { allow: false, status: answer.status, headers, body: keepBody ? answer.body : Buffer.alloc(0) };
  }
}

function hasBody(ctx: RequestContext): boolean {
  const h = ctx.req.headers;
  const length = h['content-length'];
  return (length !== undefined && length !== '0') || h['transfer-encoding'] !== undefined;
}

/**
 * Reads the request body for the authorizer (at most `max` bytes, else 413) and puts it back in
 * front of the upstream request.
 */
async function readBody(ctx: RequestContext, max: number): Promise<Buffer> {
  const req = ctx.req;
  const tooLarge = () => {
    ctx.res.shouldKeepAlive = false;
    return new GatewayError('PAYLOAD_TOO_LARGE', { detail: `The request body exceeds the ${max} bytes the authorizer may be sent` });
  };
  if (Number(req.headers['content-length']) > max) throw tooLarge();
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length;
    if (size > max) throw tooLarge();
    chunks.push(chunk);
  }
  const body = Buffer.concat(chunks);
  ctx.body = new PassThrough().end(body);
  return body;
}

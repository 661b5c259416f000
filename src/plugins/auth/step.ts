import type { FastifyBaseLogger } from 'fastify';
import type { Step, StepResult } from '../../chain';
import type { RequestContext } from '../../context';
import type { CounterCell, CounterFamily } from '../../observability/fast-metrics';
import { bodyPending, GatewayError } from '../../errors';
import type { ApiKeyAuthenticator } from './api-keys';
import type { ClientCertAuthenticator } from './client-cert';
import type { Decision, Denied, ExternalAuthorizer } from './external';
import type { Introspector } from './introspection';
import { RemoteDown, type RemoteMetrics } from './remote-call';
import type { Verified } from './consumers';
import { bearerToken, cookieValue, queryValue, withoutCookies, withoutQueryParams } from './credentials';
import { AuthFailure } from './failure';
import { tokenMediaType, type JwtAuthenticator } from './jwt';
import type { OidcLogin } from './oidc';
import { parseCookies } from './sealed-cookie';
import type { RouteAuthConfig } from './schema';

/** Where credentials come from: fixed by the configuration, shared by every route. */
export interface CredentialSources {
  jwt: JwtAuthenticator | null;
  clientCert: ClientCertAuthenticator | null;
  apiKeys: ApiKeyAuthenticator;
  /** Lower-case API key header name. */
  apiKeyHeader: string;
  apiKeyHeaderName: string;
  jwtCookie: string | undefined;
  jwtQuery: string | undefined;
  apiKeyQuery: string | undefined;
  realm: string;
  oidc: OidcLogin | null;
  introspection: Introspector | null;
  external: ExternalAuthorizer | null;
  externalMetrics: RemoteMetrics | null;
  /** auth.jwt.issuer or issuers[]: on a route with jwt and introspection, a JWT from one is verified locally. */
  jwtIssuers: ReadonlySet<string> | undefined;
}

const NONE = 0;
const JWT = 1;
const KEY = 2;
const INTROSPECTION = 3;
const EXTERNAL = 4;
const CLIENT_CERT = 5;
type Chosen = typeof NONE | typeof JWT | typeof KEY | typeof INTROSPECTION | typeof EXTERNAL | typeof CLIENT_CERT;
// oidc routes take runWithLogin and never this order.
const METHOD_CODES = { jwt: JWT, apiKey: KEY, introspection: INTROSPECTION, external: EXTERNAL, clientCert: CLIENT_CERT, oidc: NONE } as const;

const B64URL_SEGMENT = /^[A-Za-z0-9_-]+$/;

/**
 * Whether a bearer token is a JWT this gateway verifies itself: three base64url segments whose
 * payload is a JSON object with one of the configured issuers (any issuer when none is configured).
 * Anything else is an opaque token for the introspection endpoint.
 */
export function isLocalJwt(token: string, issuers: ReadonlySet<string> | undefined): boolean {
  const a = token.indexOf('.');
  const b = a < 0 ? -1 : token.indexOf('.', a + 1);
  if (b < 0 || token.indexOf('.', b + 1) >= 0) return false;
  const payload = token.slice(a + 1, b);
  if (!B64URL_SEGMENT.test(token.slice(0, a)) || !B64URL_SEGMENT.test(payload)) return false;
  let claims: unknown;
  try {
    claims = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'));
  } catch {
    return false;
  }
  if (claims === null || typeof claims !== 'object' || Array.isArray(claims)) return false;
  if (issuers === undefined) return true;
  const iss = (claims as { iss?: unknown }).iss;
  return typeof iss === 'string' && issuers.has(iss);
}

type Result = 'ok' | 'anonymous' | 'unauthenticated' | 'forbidden' | 'unavailable';

/** The auth step of one route: everything it needs is decided here, once, at start-up. */
export class AuthStep implements Step {
  readonly name = 'auth';
  /** The route's methods that can be used, in its order, as codes. */
  private readonly order: readonly Chosen[];
  private readonly useJwt: boolean;
  private readonly useIntrospection: boolean;
  private readonly failOpen: boolean;
  private readonly required: boolean;
  private readonly roles: ReadonlySet<string> | null;
  private readonly scopes: ReadonlyMap<string, readonly string[]> | null;
  /** Accepted JWT types as media types, or null for any. */
  private readonly tokenTypes: ReadonlySet<string> | null;
  /** Token cookie / query parameters to take out of what is forwarded, or null. */
  private readonly stripCookies: ReadonlySet<string> | null;
  private readonly stripQuery: ReadonlySet<string> | null;
  private readonly missing: Record<string, string>;
  private readonly badToken: Record<string, string>;
  private readonly badKey: Record<string, string>;
  /** A certificate refusal: the route's other challenges, if it has any (TLS has no scheme of its own). */
  private readonly badCert: Record<string, string> | undefined;
  /** The route accepts client certificates only: a missing one is CLIENT_CERT_REQUIRED. */
  private readonly certOnly: boolean;
  private readonly counts: Record<Result, CounterCell>;
  /** The route's login, when it lists `oidc`: requests then take runWithLogin. */
  private readonly oidc: OidcLogin | null;
  private readonly methods: readonly string[];

  constructor(
    private readonly routeName: string,
    auth: RouteAuthConfig,
    private readonly src: CredentialSources,
    counter: CounterFamily,
    private readonly log: FastifyBaseLogger,
  ) {
    // A route with oidc takes runWithLogin, which walks the methods itself.
    this.order = auth.methods.filter((m) => m !== 'oidc' && (m !== 'clientCert' || src.clientCert !== null)).map((m) => METHOD_CODES[m]);
    this.certOnly = auth.methods.length === 1 && auth.methods[0] === 'clientCert';
    this.useJwt = auth.methods.includes('jwt') && src.jwt !== null;
    this.useIntrospection = auth.methods.includes('introspection') && src.introspection !== null;
    this.failOpen = auth.failOpen;
    this.required = auth.required;
    this.roles = auth.roles ? new Set(auth.roles) : null;
    this.scopes = auth.scopes ? new Map(Object.entries(auth.scopes)) : null;
    this.tokenTypes = auth.tokenTypes ? new Set(auth.tokenTypes.map(tokenMediaType)) : null;

    this.oidc = auth.methods.includes('oidc') ? src.oidc : null;
    this.methods = auth.methods;
    const cookies = auth.forwardCredentials || !src.jwtCookie ? [] : [src.jwtCookie];
    // The session cookies are the gateway's own: never forwarded, whatever forwardCredentials says.
    if (this.oidc !== null) cookies.push(...this.oidc.cookieNames);
    this.stripCookies = cookies.length ? new Set(cookies) : null;
    const params = auth.forwardCredentials ? [] : [src.jwtQuery, src.apiKeyQuery].filter((p): p is string => p !== undefined);
    this.stripQuery = params.length ? new Set(params) : null;

    const realm = `realm="${src.realm}"`;
    const bearer = `Bearer ${realm}`;
    const apiKey = `ApiKey ${realm}, header="${src.apiKeyHeaderName}"`;
    // A login session and a client certificate have no WWW-Authenticate scheme: a route with only those sends none.
    // jwt and introspection share one Bearer challenge. The external authorizer speaks for itself once asked (its
    // refusals are relayed), but a request without its credential never reaches it: when that credential is the
    // Authorization header, the gateway's 401 challenges for a bearer token, as RFC 9110 §11.6.1 asks of every 401.
    const bearerError = (m: string): boolean => m === 'jwt' || m === 'introspection' || (m === 'external' && src.external?.bearer === true);
    const challenges = (jwtError: string, keyError: string): Record<string, string> => {
      const list = auth.methods.flatMap((m) => (bearerError(m) ? [bearer + jwtError] : m === 'apiKey' ? [apiKey + keyError] : []));
      return list.length ? { 'www-authenticate': [...new Set(list)].join(', ') } : {};
    };
    this.missing = challenges('', '');
    this.badToken = challenges(', error="invalid_token"', '');
    this.badKey = challenges('', ', error="invalid_key"');
    this.badCert = this.missing;
    this.counts = {
      ok: counter.child(routeName, 'ok'),
      anonymous: counter.child(routeName, 'anonymous'),
      unauthenticated: counter.child(routeName, 'unauthenticated'),
      forbidden: counter.child(routeName, 'forbidden'),
      unavailable: counter.child(routeName, 'unavailable'),
    };
  }

  run(ctx: RequestContext): StepResult {
    if (this.oidc !== null) return this.runWithLogin(ctx, this.oidc);
    if (this.stripCookies !== null) this.forwardCookiesWithoutToken(ctx);
    let credential: string | undefined;
    let chosen: Chosen = NONE;
    const order = this.order;
    for (let i = 0; i < order.length && chosen === NONE; i++) {
      switch (order[i]) {
        case JWT:
        case INTROSPECTION:
          credential = order[i] === JWT ? this.jwtToken(ctx) : this.introspectionToken(ctx);
          if (credential !== undefined) chosen = this.bearerKind(credential);
          break;
        case KEY:
          credential = this.apiKey(ctx);
          if (credential !== undefined) chosen = KEY;
          break;
        case CLIENT_CERT:
          if (this.src.clientCert!.presented(ctx.socket)) chosen = CLIENT_CERT;
          break;
        case EXTERNAL:
          if (this.src.external!.hasCredential(ctx)) chosen = EXTERNAL;
      }
    }
    if (this.stripQuery !== null) ctx.query = withoutQueryParams(ctx.query, this.stripQuery);
    if (chosen === NONE) {
      if (this.required) {
        this.counts.unauthenticated.inc();
        if (this.certOnly) throw new GatewayError('CLIENT_CERT_REQUIRED', { detail: 'this route requires a TLS client certificate' });
        throw new GatewayError('UNAUTHENTICATED', { detail: 'credentials are required', headers: this.missing });
      }
      this.counts.anonymous.inc();
      return true;
    }
    if (chosen === EXTERNAL) return this.runExternal(ctx);
    let verified: Verified | Promise<Verified>;
    try {
      if (chosen === JWT) verified = this.src.jwt!.authenticate(credential!);
      else if (chosen === KEY) verified = this.src.apiKeys.authenticate(credential!);
      else if (chosen === CLIENT_CERT) verified = this.src.clientCert!.authenticate(ctx.socket);
      else verified = this.src.introspection!.authenticate(credential!, ctx);
    } catch (err) {
      throw this.refusal(err, chosen);
    }
    if (verified instanceof Promise) {
      return verified.then(
        (v) => this.admit(ctx, v),
        (err: unknown) => {
          throw this.refusal(err, chosen);
        },
      );
    }
    return this.admit(ctx, verified);
  }

  /** A bearer token on a route with both jwt and introspection goes to the one that can check it. */
  private bearerKind(token: string): Chosen {
    if (!this.useIntrospection) return JWT;
    if (!this.useJwt) return INTROSPECTION;
    return isLocalJwt(token, this.src.jwtIssuers) ? JWT : INTROSPECTION;
  }

  private introspectionToken(ctx: RequestContext): string | undefined {
    return this.useIntrospection ? bearerToken(ctx.req.headers.authorization) : undefined;
  }

  private runExternal(ctx: RequestContext): StepResult {
    let decision: Decision | Promise<Decision>;
    try {
      decision = this.src.external!.decide(ctx, this.routeName);
    } catch (err) {
      return this.externalFailed(err);
    }
    if (decision instanceof Promise) {
      return decision.then(
        (d) => this.applyDecision(ctx, d),
        (err: unknown) => this.externalFailed(err),
      );
    }
    return this.applyDecision(ctx, decision);
  }

  private applyDecision(ctx: RequestContext, d: Decision): boolean {
    const m = this.src.externalMetrics!;
    if (!d.allow) {
      m.deny.inc();
      return this.relayDenial(ctx, d);
    }
    m.allow.inc();
    if (d.verified !== null) return this.admit(ctx, d.verified);
    // Allowed without an identity: the route's role and scope rules cannot be met.
    if (this.roles !== null || this.scopes !== null) throw this.forbidden('the authorizer named no caller, and this route requires roles or scopes');
    const headers = d.headers;
    for (let i = 0; i < headers.length; i++) ctx.addUpstreamHeader(headers[i][0], headers[i][1]);
    this.counts.ok.inc();
    return true;
  }

  /** The authorizer could not decide: 503, or through without an identity when the route fails open. */
  private externalFailed(err: unknown): true {
    if (!(err instanceof RemoteDown)) throw this.refusal(err, EXTERNAL);
    const m = this.src.externalMetrics!;
    if (this.failOpen) {
      m.failOpen.inc();
      this.counts.anonymous.inc();
      return true;
    }
    m.unavailable.inc();
    this.counts.unavailable.inc();
    throw new GatewayError('AUTHORIZER_UNAVAILABLE', { detail: err.message, headers: { 'retry-after': 1 } });
  }

  /** The authorizer's refusal goes to the client as it gave it: status, selected headers, body. */
  private relayDenial(ctx: RequestContext, d: Denied): false {
    const res = ctx.res;
    (d.status === 403 ? this.counts.forbidden : this.counts.unauthenticated).inc();
    ctx.errorCode = d.status === 403 ? 'FORBIDDEN' : 'UNAUTHENTICATED';
    if (res.headersSent || res.destroyed) return false;
    if (bodyPending(ctx.req)) res.shouldKeepAlive = false;
    const list: string[] = [...d.headers, 'content-length', String(d.body.length), 'x-request-id', ctx.id, 'cache-control', 'no-store'];
    if (ctx.responseHeaders !== null) for (const h of ctx.responseHeaders) list.push(h);
    res.writeHead(d.status, list);
    res.end(d.body);
    return false;
  }
  /**
   * A route that lists `oidc`: its callback and logout paths are answered here; otherwise the
   * credentials are tried in the route's order, the session cookie standing for `oidc`, and a
   * request with none is sent to log in.
   */
  private runWithLogin(ctx: RequestContext, oidc: OidcLogin): StepResult {
    const cookies = parseCookies(ctx.req.headers.cookie);
    if (ctx.path === oidc.callbackPath) return oidc.callback(ctx, cookies).catch(this.loginRefusal);
    if (ctx.path === oidc.logoutPath) return oidc.logout(ctx, cookies).catch(this.loginRefusal);
    this.forwardCookiesWithoutToken(ctx);
    for (const m of this.methods) {
      if (m === 'oidc') {
        const session = oidc.sessionCookie(cookies);
        if (session === null) continue;
        if (this.stripQuery !== null) ctx.query = withoutQueryParams(ctx.query, this.stripQuery);
        let v: Verified | null | Promise<Verified | null>;
        try {
          v = oidc.authenticate(ctx, cookies, session);
        } catch (err) {
          throw this.refusal(err, KEY);
        }
        if (v instanceof Promise) {
          return v.then(
            (r) => this.admitSession(ctx, oidc, r),
            (err: unknown) => {
              throw this.refusal(err, KEY);
            },
          );
        }
        return this.admitSession(ctx, oidc, v);
      }
      if (m === 'clientCert') {
        if (this.src.clientCert === null || !this.src.clientCert.presented(ctx.socket)) continue;
        if (this.stripQuery !== null) ctx.query = withoutQueryParams(ctx.query, this.stripQuery);
        let cert: Verified;
        try {
          cert = this.src.clientCert.authenticate(ctx.socket);
        } catch (err) {
          throw this.refusal(err, CLIENT_CERT);
        }
        return this.admit(ctx, cert);
      }
      const isJwt = m === 'jwt';
      const credential = isJwt ? this.jwtToken(ctx) : this.apiKey(ctx);
      if (credential === undefined) continue;
      if (this.stripQuery !== null) ctx.query = withoutQueryParams(ctx.query, this.stripQuery);
      const kind = isJwt ? JWT : KEY;
      let verified: Verified | Promise<Verified>;
      try {
        verified = isJwt ? this.src.jwt!.authenticate(credential) : this.src.apiKeys.authenticate(credential);
      } catch (err) {
        throw this.refusal(err, kind);
      }
      if (verified instanceof Promise) {
        return verified.then(
          (v) => this.admit(ctx, v),
          (err: unknown) => {
            throw this.refusal(err, kind);
          },
        );
      }
      return this.admit(ctx, verified);
    }
    return this.withoutSession(ctx, oidc);
  }

  private admitSession(ctx: RequestContext, oidc: OidcLogin, v: Verified | null): StepResult {
    return v === null ? this.withoutSession(ctx, oidc) : this.admit(ctx, v);
  }

  private withoutSession(ctx: RequestContext, oidc: OidcLogin): StepResult {
    if (this.stripQuery !== null) ctx.query = withoutQueryParams(ctx.query, this.stripQuery);
    if (!this.required) {
      this.counts.anonymous.inc();
      return true;
    }
    this.counts.unauthenticated.inc();
    return oidc.challenge(ctx, this.missing).catch(this.loginRefusal);
  }

  private readonly loginRefusal = (err: unknown): never => {
    throw this.refusal(err, KEY);
  };

  private jwtToken(ctx: RequestContext): string | undefined {
    if (!this.useJwt) return undefined;
    const req = ctx.req;
    let token = bearerToken(req.headers.authorization);
    if (token === undefined && this.src.jwtCookie !== undefined) token = cookieValue(req.headers.cookie, this.src.jwtCookie);
    if (token === undefined && this.src.jwtQuery !== undefined) token = queryValue(ctx.query, this.src.jwtQuery);
    return token;
  }

  private apiKey(ctx: RequestContext): string | undefined {
    let key = ctx.req.headers[this.src.apiKeyHeader];
    if (Array.isArray(key)) key = key.join(', ');
    if (key === undefined && this.src.apiKeyQuery !== undefined) key = queryValue(ctx.query, this.src.apiKeyQuery);
    return key;
  }

  private forwardCookiesWithoutToken(ctx: RequestContext): void {
    const cookie = ctx.req.headers.cookie;
    if (cookie === undefined) return;
    const rest = withoutCookies(cookie, this.stripCookies!);
    if (rest !== '') ctx.addUpstreamHeader('cookie', rest);
  }

  private admit(ctx: RequestContext, v: Verified): true {
    const id = v.identity;
    if (this.tokenTypes !== null && v.tokenType !== undefined && (v.tokenType === null || !this.tokenTypes.has(v.tokenType))) {
      this.counts.unauthenticated.inc();
      throw new GatewayError('UNAUTHENTICATED', { detail: 'the token type (typ) is not accepted on this route', headers: this.badToken });
    }
    if (v.routes !== null && !v.routes.has(this.routeName)) throw this.forbidden('the consumer may not use this route');
    if (this.roles !== null && !id.roles.some((r) => this.roles!.has(r))) throw this.forbidden('the caller lacks the role this route requires');
    if (this.scopes !== null) {
      const need = this.scopes.get(ctx.req.method ?? 'GET') ?? this.scopes.get('*');
      if (need !== undefined) {
        for (const s of need) if (!id.scopes.includes(s)) throw this.forbidden(`the scope "${s}" is required`);
      }
    }
    ctx.identity = id;
    const headers = id.headers!;
    for (let i = 0; i < headers.length; i++) ctx.addUpstreamHeader(headers[i][0], headers[i][1]);
    this.counts.ok.inc();
    return true;
  }

  private forbidden(detail: string): GatewayError {
    this.counts.forbidden.inc();
    return new GatewayError('FORBIDDEN', { detail });
  }

  /** Any failure to verify is the client's 401 (or 503 when the key source is down), never a 500. */
  private refusal(err: unknown, kind: Chosen): GatewayError {
    if (err instanceof GatewayError) return err;
    if (err instanceof AuthFailure && err.unavailable) {
      this.counts.unavailable.inc();
      const code = err.remote ? 'AUTHORIZER_UNAVAILABLE' : 'AUTH_UNAVAILABLE';
      return new GatewayError(code, { detail: err.message, headers: { 'retry-after': 1 } });
    }
    if (!(err instanceof AuthFailure)) this.log.warn({ err: { message: (err as Error)?.message } }, 'credential verification failed unexpectedly');
    const detail = err instanceof AuthFailure ? err.message : 'the credentials are not valid';
    const code = err instanceof AuthFailure && err.code !== undefined ? err.code : 'UNAUTHENTICATED';
    if (code === 'CLIENT_CERT_UNKNOWN_CONSUMER') {
      // The certificate is genuine (the CA vouches for the caller), the caller is just not allowed in.
      this.counts.forbidden.inc();
      return new GatewayError(code, { detail });
    }
    this.counts.unauthenticated.inc();
    return new GatewayError(code, { detail, headers: kind === KEY ? this.badKey : kind === CLIENT_CERT ? this.badCert : this.badToken });
  }
}

import { createHash, randomBytes } from 'node:crypto';
import type { FastifyBaseLogger } from 'fastify';
import type { RequestContext } from '../../context';
import { GatewayError } from '../../errors';
import type { CounterFamily } from '../../observability/fast-metrics';
import { ClaimsReader, union } from './claims';
import type { ConsumerDirectory, Verified } from './consumers';
import { queryValue } from './credentials';
import { AuthFailure } from './failure';
import type { IdentityHeaderNames } from './identity-headers';
import { GrantRefused, ProviderError, type OidcClient, type TokenResponse } from './oidc-client';
import type { OidcConfig } from './oidc-schema';
import { CHUNK_CHARS, chunkName, CookieSealer, readChunks } from './sealed-cookie';
import { TtlCache } from './ttl-cache';

/** What a session cookie holds, sealed. Short keys: every byte is sent with every request. */
interface Session {
  /** Consumer id, user id, roles, scopes, extra identity headers: read from the ID token at login. */
  c: string;
  u?: string;
  r: readonly string[];
  s: readonly string[];
  h: [string, string][];
  /** ID token (the logout hint), access token (when forwarded), refresh token. */
  it?: string;
  at?: string;
  rt?: string;
  /** Access token expiry and session end, ms since the epoch. */
  ae: number | null;
  ex: number;
}

/** The login in progress, sealed in its own cookie between the redirect to the provider and the callback. */
interface LoginState {
  st: string;
  n: string;
  v: string;
  /** Where the user was going. */
  r: string;
  ex: number;
}

export interface OidcMetrics {
  logins: CounterFamily;
  callbackFailures: CounterFamily;
  refreshes: CounterFamily;
}

/** Reasons a callback fails, the `reason` label of gateway_oidc_callback_failures_total. */
export const CALLBACK_FAILURES = ['state', 'provider_error', 'code_refused', 'id_token', 'identity', 'session_too_large', 'unavailable'] as const;
type CallbackFailure = (typeof CALLBACK_FAILURES)[number];

const OTHER_SITE = /^\/[/\\]|\\/;
const b64 = (bytes: number) => randomBytes(bytes).toString('base64url');
/** How long a refreshed session is handed to requests still carrying the cookie it replaced (with rotating refresh tokens, a second refresh would fail). */
const REFRESH_GRACE_MS = 60000;

class CallbackError extends Error {
  constructor(
    readonly reason: CallbackFailure,
    readonly error: GatewayError,
  ) {
    super(error.message);
  }
}

/**
 * OpenID Connect login for the routes that list `oidc`: the redirect to the provider (code flow,
 * PKCE S256, state, nonce), the callback, the sealed session cookie and its refresh, and logout.
 * Built per runtime; the provider client it uses lives as long as its configuration.
 */
export class OidcLogin {
  readonly callbackPath: string;
  readonly logoutPath: string;
  /** Every cookie name this login owns, never forwarded upstream. */
  readonly cookieNames: readonly string[];
  private readonly sealer: CookieSealer;
  private readonly loginCookie: string;
  private readonly attributes: string;
  private readonly cleared: string;
  private readonly scope: string;
  private readonly claims: ClaimsReader;
  /** Opened sessions by cookie text, so a repeated cookie costs one map lookup (bounded: a key can be 11 KB). */
  private readonly opened = new TtlCache<Session>(1000);
  private readonly refreshing = new Map<string, Promise<Session | null>>();
  /** Recent refreshes, by the refresh token they replaced. */
  private readonly refreshed = new TtlCache<Session>(10000);

  constructor(
    private readonly cfg: OidcConfig,
    private readonly client: OidcClient,
    private readonly consumers: ConsumerDirectory,
    names: IdentityHeaderNames,
    private readonly metrics: OidcMetrics,
    private readonly log: FastifyBaseLogger,
  ) {
    this.callbackPath = new URL(cfg.redirectUri).pathname;
    this.logoutPath = cfg.logoutPath;
    const s = cfg.session;
    this.sealer = new CookieSealer(s.keys);
    this.loginCookie = `${s.cookie}_login`;
    this.cookieNames = [this.loginCookie, ...Array.from({ length: s.maxCookies }, (_, i) => chunkName(s.cookie, i))];
    this.attributes = `; Path=/; HttpOnly${s.secure ? '; Secure' : ''}; SameSite=Lax${s.domain ? `; Domain=${s.domain}` : ''}`;
    this.cleared = `=; Max-Age=0${this.attributes}`;
    this.scope = cfg.scopes.join(' ');
    this.claims = new ClaimsReader(cfg.claims, cfg.claimHeaders, names, 'the ID token', 'the ID token claim');
  }

  /** The session cookie (its chunks joined), or null when the browser sent none. */
  sessionCookie(cookies: Map<string, string>): string | null {
    return readChunks(cookies, this.cfg.session.cookie, this.cfg.session.maxCookies);
  }

  /**
   * The identity of a session cookie; null when the cookie is not a live session (tampered, sealed
   * by an unknown key, expired, refresh refused), in which case its clearing is added to the answer.
   * Renews the access token first when it is about to expire.
   */
  authenticate(ctx: RequestContext, cookies: Map<string, string>, text: string): Verified | null | Promise<Verified | null> {
    const now = Date.now();
    let session = this.opened.get(text, now);
    if (session === undefined) {
      const opened = this.sealer.open(this.cfg.session.cookie, text);
      session = isSession(opened) ? opened : undefined;
      if (session === undefined || now >= session.ex) return this.end(ctx, cookies);
      this.opened.set(text, session, Math.min(session.ex, this.refreshAt(session)));
    }
    if (now < this.refreshAt(session)) return this.verified(ctx, session);
    return this.renew(ctx, cookies, session, now);
  }

  private refreshAt(s: Session): number {
    return s.ae === null ? s.ex : s.ae - this.cfg.refreshBeforeSec * 1000;
  }

  private renew(ctx: RequestContext, cookies: Map<string, string>, session: Session, now: number): Verified | null | Promise<Verified | null> {
    const stillValid = session.ae === null || now < session.ae;
    const rt = session.rt;
    if (rt === undefined) return stillValid ? this.verified(ctx, session) : this.end(ctx, cookies);
    const done = this.refreshed.get(rt, now);
    if (done !== undefined) {
      this.setSession(ctx, cookies, done);
      return this.verified(ctx, done);
    }
    let pending = this.refreshing.get(rt);
    if (pending === undefined) {
      pending = this.refresh(session, rt).finally(() => this.refreshing.delete(rt));
      this.refreshing.set(rt, pending);
    }
    return pending.then(
      (next) => {
        if (next === null) return this.end(ctx, cookies);
        this.setSession(ctx, cookies, next);
        return this.verified(ctx, next);
      },
      (err: unknown) => {
        // The provider is down or confused: a still-valid access token carries on; an expired one cannot.
        if (stillValid) return this.verified(ctx, session);
        if (err instanceof AuthFailure) throw err;
        throw new AuthFailure(`the session cannot be renewed: ${(err as Error).message}`, true);
      },
    );
  }

  /** The renewed session, null when the provider refused the refresh token (the session is over); rejects when the provider failed. */
  private async refresh(session: Session, rt: string): Promise<Session | null> {
    let tokens: TokenResponse;
    try {
      tokens = await this.client.grant({ grant_type: 'refresh_token', refresh_token: rt });
    } catch (err) {
      if (err instanceof GrantRefused) {
        this.metrics.refreshes.child('refused').inc();
        return null;
      }
      this.metrics.refreshes.child('error').inc();
      this.log.warn({ err: { message: (err as Error).message } }, 'OIDC refresh failed');
      throw err;
    }
    let next: Session;
    try {
      let identity: Pick<Session, 'c' | 'u' | 'r' | 's' | 'h'> = session;
      if (tokens.idToken !== undefined) {
        const claims = await this.client.verifyIdToken(tokens.idToken);
        // OIDC Core §12.2: a refreshed ID token is about the same user.
        if (claims.sub !== undefined && this.cfg.claims.consumer === 'sub' && claims.sub !== session.c) throw new AuthFailure('the refreshed ID token names another user');
        identity = this.identityOf(claims, tokens.scope);
      }
      next = this.sessionOf(identity, tokens, tokens.idToken ?? session.it, tokens.refreshToken ?? rt, session.ex);
    } catch (err) {
      this.metrics.refreshes.child('error').inc();
      throw err;
    }
    this.metrics.refreshes.child('ok').inc();
    this.refreshed.set(rt, next, Date.now() + REFRESH_GRACE_MS);
    return next;
  }

  private verified(ctx: RequestContext, s: Session): Verified {
    const known = this.consumers.get(s.c);
    const roles = known ? union(s.r, known.config.roles) : s.r;
    const scopes = known ? union(s.s, known.config.scopes) : s.s;
    if (this.cfg.forwardAccessToken && s.at !== undefined) ctx.addUpstreamHeader('authorization', `Bearer ${s.at}`);
    return {
      identity: { consumerId: s.c, roles, scopes, method: 'oidc', headers: this.claims.headers(s.c, s.u, roles, s.h) },
      routes: known ? known.routes : null,
    };
  }

  /** No live session: the answer clears the session cookies the browser sent. */
  private end(ctx: RequestContext, cookies: Map<string, string>): null {
    for (let i = 0; i < this.cfg.session.maxCookies; i++) {
      const name = chunkName(this.cfg.session.cookie, i);
      if (cookies.has(name)) ctx.addResponseHeader('set-cookie', name + this.cleared);
    }
    return null;
  }

  /** Sends a browser to log in (302 to the provider), or refuses any other client with 401. */
  async challenge(ctx: RequestContext, unauthenticated: Record<string, string>): Promise<false> {
    const req = ctx.req;
    const method = req.method;
    const accept = req.headers.accept;
    const browser =
      (method === 'GET' || method === 'HEAD') &&
      accept !== undefined &&
      accept.includes('text/html') &&
      (req.headers['x-requested-with'] ?? '').toString().toLowerCase() !== 'xmlhttprequest';
    if (!browser) throw new GatewayError('UNAUTHENTICATED', { detail: 'a login session is required (log in with a browser first)', headers: unauthenticated });
    const meta = await this.client.provider();
    const state = b64(32);
    const nonce = b64(32);
    const verifier = b64(32);
    // Only a path on this site: "//host" or "/\\host" would send the browser elsewhere after the login.
    const returnTo = OTHER_SITE.test(ctx.path) ? '/' : ctx.path + ctx.query;
    const login: LoginState = { st: state, n: nonce, v: verifier, r: returnTo, ex: Date.now() + this.cfg.session.loginTimeoutSec * 1000 };
    const params = new URLSearchParams({
      response_type: 'code',
      client_id: this.cfg.clientId,
      redirect_uri: this.cfg.redirectUri,
      scope: this.scope,
      state,
      nonce,
      code_challenge: createHash('sha256').update(verifier).digest('base64url'),
      code_challenge_method: 'S256',
    });
    const sep = meta.authorizationEndpoint.includes('?') ? '&' : '?';
    this.metrics.logins.child('started').inc();
    const sealed = this.sealer.seal(this.loginCookie, login);
    ctx.addResponseHeader('set-cookie', `${this.loginCookie}=${sealed}; Max-Age=${this.cfg.session.loginTimeoutSec}${this.attributes}`);
    redirect(ctx, `${meta.authorizationEndpoint}${sep}${params}`);
    return false;
  }

  /** The provider sent the browser back: check the state, redeem the code, verify the ID token, set the session. */
  async callback(ctx: RequestContext, cookies: Map<string, string>): Promise<false> {
    try {
      await this.completeLogin(ctx, cookies);
      this.metrics.logins.child('completed').inc();
      return false;
    } catch (err) {
      if (err instanceof CallbackError) {
        this.metrics.callbackFailures.child(err.reason).inc();
        throw err.error;
      }
      throw err;
    }
  }

  private async completeLogin(ctx: RequestContext, cookies: Map<string, string>): Promise<void> {
    const q = ctx.query;
    const sent = cookies.get(this.loginCookie);
    const opened = sent === undefined ? null : this.sealer.open(this.loginCookie, sent);
    // Whatever happens next, this login attempt is used up.
    if (sent !== undefined) ctx.addResponseHeader('set-cookie', this.loginCookie + this.cleared);
    if (!isLoginState(opened)) throw invalid('state', 'no login is in progress in this browser (the login cookie is missing, expired or not valid); start again from the page you wanted');
    const state = queryValue(q, 'state');
    if (state === undefined || state !== opened.st) throw invalid('state', 'the state parameter does not match the login in progress');
    if (Date.now() >= opened.ex) throw invalid('state', `the login took longer than ${this.cfg.session.loginTimeoutSec} seconds; start again`);
    const iss = queryValue(q, 'iss');
    // RFC 9207: a provider that names itself in the response must be the configured one (mix-up defence).
    if (iss !== undefined && iss !== this.cfg.issuer) throw invalid('state', 'the authorization response comes from another issuer');
    const error = queryValue(q, 'error');
    if (error !== undefined) {
      const code = /^[\x20-\x21\x23-\x5b\x5d-\x7e]{1,64}$/.test(error) ? error : 'unknown_error';
      throw new CallbackError('provider_error', new GatewayError('OIDC_LOGIN_REFUSED', { detail: `the identity provider answered error=${code}` }));
    }
    const code = queryValue(q, 'code');
    if (code === undefined || code === '') throw invalid('state', 'the callback carries no authorization code');

    let tokens: TokenResponse;
    try {
      tokens = await this.client.grant({ grant_type: 'authorization_code', code, redirect_uri: this.cfg.redirectUri, code_verifier: opened.v });
    } catch (err) {
      if (err instanceof GrantRefused) {
        throw invalid('code_refused', `the identity provider refused the authorization code (${err.error}): it was used already, has expired, or belongs to another login`);
      }
      throw providerFailure(err);
    }
    if (tokens.idToken === undefined) throw new CallbackError('id_token', new GatewayError('IDP_BAD_RESPONSE', { detail: 'the token response has no id_token (is `openid` among the scopes?)' }));
    let claims: Record<string, unknown>;
    try {
      claims = await this.client.verifyIdToken(tokens.idToken);
    } catch (err) {
      if (err instanceof AuthFailure && !err.unavailable) throw new CallbackError('id_token', new GatewayError('IDP_BAD_RESPONSE', { detail: err.message }));
      throw providerFailure(err);
    }
    if (claims.nonce !== opened.n) throw invalid('state', 'the ID token nonce does not match the login in progress');
    let identity: Pick<Session, 'c' | 'u' | 'r' | 's' | 'h'>;
    try {
      identity = this.identityOf(claims, tokens.scope);
    } catch (err) {
      throw new CallbackError('identity', new GatewayError('UNAUTHENTICATED', { detail: (err as Error).message }));
    }
    const session = this.sessionOf(identity, tokens, tokens.idToken, tokens.refreshToken, Date.now() + this.cfg.session.maxAgeSec * 1000);
    if (!this.setSession(ctx, cookies, session)) {
      throw new CallbackError(
        'session_too_large',
        new GatewayError('IDP_BAD_RESPONSE', {
          detail: `the tokens do not fit in ${this.cfg.session.maxCookies} cookies of 4 KB (auth.oidc.session.maxCookies); ask for fewer scopes or claims`,
        }),
      );
    }
    redirect(ctx, opened.r);
  }

  /** Ends the session here and at the provider (RP-initiated logout), or at least here when the provider has no end-session endpoint. */
  async logout(ctx: RequestContext, cookies: Map<string, string>): Promise<false> {
    const text = this.sessionCookie(cookies);
    const opened = text === null ? null : this.sealer.open(this.cfg.session.cookie, text);
    this.end(ctx, cookies);
    const meta = await this.client.provider().catch(() => null);
    const after = this.cfg.postLogoutRedirectUri;
    if (meta?.endSessionEndpoint !== undefined) {
      const params = new URLSearchParams({ client_id: this.cfg.clientId });
      if (isSession(opened) && opened.it !== undefined) params.set('id_token_hint', opened.it);
      if (after !== undefined) params.set('post_logout_redirect_uri', after);
      const sep = meta.endSessionEndpoint.includes('?') ? '&' : '?';
      redirect(ctx, `${meta.endSessionEndpoint}${sep}${params}`);
    } else redirect(ctx, after ?? '/');
    return false;
  }

  private identityOf(claims: Record<string, unknown>, grantedScope: string | undefined): Pick<Session, 'c' | 'u' | 'r' | 's' | 'h'> {
    const names = this.claims.names;
    const c = claims[names.consumer];
    if (typeof c !== 'string' || c === '') throw new AuthFailure(`the ID token has no "${names.consumer}" claim to identify the user`);
    const { user: u, roles: r, scopes, extra: h } = this.claims.read(claims);
    // Without a scopes claim, the scopes are those the provider granted (or, when it does not say, those asked for).
    const s = claims[names.scopes] !== undefined ? scopes : this.claims.nameList(grantedScope ?? this.scope, 'scope');
    // Checked once at login: a session only ever holds an identity that can be forwarded.
    this.claims.headers(c, u, r, h);
    return { c, u, r, s, h };
  }

  private sessionOf(id: Pick<Session, 'c' | 'u' | 'r' | 's' | 'h'>, tokens: TokenResponse, idToken: string | undefined, rt: string | undefined, ex: number): Session {
    return {
      c: id.c,
      u: id.u,
      r: id.r,
      s: id.s,
      h: id.h,
      it: idToken,
      at: this.cfg.forwardAccessToken ? tokens.accessToken : undefined,
      rt,
      ae: tokens.accessExpiresAt,
      ex,
    };
  }

  /** Seals `s` into as many cookies as it needs and clears leftover chunks; false when it needs more than maxCookies. */
  private setSession(ctx: RequestContext, cookies: Map<string, string>, s: Session): boolean {
    const { cookie, maxCookies } = this.cfg.session;
    const text = this.sealer.seal(cookie, s);
    const count = Math.ceil(text.length / CHUNK_CHARS);
    if (count > maxCookies) return false;
    const maxAge = Math.max(1, Math.floor((s.ex - Date.now()) / 1000));
    for (let i = 0; i < count; i++) {
      ctx.addResponseHeader('set-cookie', `${chunkName(cookie, i)}=${text.slice(i * CHUNK_CHARS, (i + 1) * CHUNK_CHARS)}; Max-Age=${maxAge}${this.attributes}`);
    }
    for (let i = count; i < maxCookies; i++) {
      const name = chunkName(cookie, i);
      if (cookies.has(name)) ctx.addResponseHeader('set-cookie', name + this.cleared);
    }
    return true;
  }
}

function redirect(ctx: RequestContext, location: string): void {
  const headers: string[] = ['location', location, 'cache-control', 'no-store', 'content-length', '0'];
  if (ctx.responseHeaders !== null) for (const h of ctx.responseHeaders) headers.push(h);
  ctx.res.writeHead(302, headers);
  ctx.res.end();
}

function invalid(reason: CallbackFailure, detail: string): CallbackError {
  return new CallbackError(reason, new GatewayError('OIDC_CALLBACK_INVALID', { detail }));
}

function providerFailure(err: unknown): CallbackError {
  if (err instanceof AuthFailure && err.unavailable) {
    return new CallbackError('unavailable', new GatewayError('AUTH_UNAVAILABLE', { detail: err.message, headers: { 'retry-after': 1 } }));
  }
  if (err instanceof ProviderError) return new CallbackError('provider_error', new GatewayError('IDP_BAD_RESPONSE', { detail: err.message }));
  throw err;
}

const isStringList = (v: unknown): v is string[] => Array.isArray(v) && v.every((x) => typeof x === 'string');

function isSession(v: unknown): v is Session {
  if (v === null || typeof v !== 'object') return false;
  const s = v as Record<string, unknown>;
  return (
    typeof s.c === 'string' &&
    (s.u === undefined || typeof s.u === 'string') &&
    isStringList(s.r) &&
    isStringList(s.s) &&
    Array.isArray(s.h) &&
    s.h.every((p) => isStringList(p) && p.length === 2) &&
    (s.ae === null || typeof s.ae === 'number') &&
    typeof s.ex === 'number'
  );
}

function isLoginState(v: unknown): v is LoginState {
  if (v === null || typeof v !== 'object') return false;
  const s = v as Record<string, unknown>;
  return typeof s.st === 'string' && typeof s.n === 'string' && typeof s.v === 'string' && typeof s.r === 'string' && typeof s.ex === 'number';
}

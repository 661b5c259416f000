import { performance } from 'node:perf_hooks';
import type { FastifyBaseLogger } from 'fastify';
import { Agent } from 'undici';
import type { CounterFamily } from '../../observability/fast-metrics';
import type { Resource } from '../types';
import { AuthFailure } from './failure';
import { JwksKeySource } from './jwks';
import { checkTimeClaims, tokenKid, tokenMessage, type ClaimRules, type KeyVerifier, type VerifiedToken } from './jwt';
import type { OidcConfig } from './oidc-schema';

/** The parts of the provider's discovery document the gateway uses. */
export interface ProviderMetadata {
  issuer: string;
  authorizationEndpoint: string;
  tokenEndpoint: string;
  jwksUri: string;
  endSessionEndpoint: string | undefined;
}

/** The provider answered, but not with something usable: the login fails with 502, never 500. */
export class ProviderError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ProviderError';
  }
}

/** The token endpoint refused the grant (RFC 6749 §5.2): the client's fault or an expired code/refresh token, not the provider's. */
export class GrantRefused extends Error {
  constructor(readonly error: string) {
    super(`the provider refused the grant: ${error}`);
    this.name = 'GrantRefused';
  }
}

export interface TokenResponse {
  accessToken: string;
  /** Milliseconds since the epoch, or null when the provider did not say. */
  accessExpiresAt: number | null;
  idToken: string | undefined;
  refreshToken: string | undefined;
  scope: string | undefined;
}

export interface OidcClientOptions {
  cfg: OidcConfig;
  log: FastifyBaseLogger;
  jwksFetches: CounterFamily;
}

function endpoint(doc: Record<string, unknown>, field: string, required: boolean): string | undefined {
  const v = doc[field];
  if (v === undefined && !required) return undefined;
  if (typeof v !== 'string') throw new ProviderError(`the discovery document has no "${field}"`);
  let u: URL;
  try {
    u = new URL(v);
  } catch {
    throw new ProviderError(`the discovery document's "${field}" is not a URL`);
  }
  if (u.protocol !== 'https:' && u.protocol !== 'http:') throw new ProviderError(`the discovery document's "${field}" is not an http(s) URL`);
  return v;
}

/**
 * The gateway's view of one OpenID provider: its discovery document (read at start-up and every
 * refreshMs, never from anything a client sent), its keys (our JWKS source, built from `jwks_uri`)
 * and its token endpoint. Lives as long as the gateway keeps the same provider configuration.
 */
export class OidcClient implements Resource {
  readonly name = 'oidc';
  private readonly agent: Agent;
  private metadata: ProviderMetadata | null = null;
  private discoveryError = 'the discovery document has not been read yet';
  private lastAttemptAt = -Infinity;
  private inflight: Promise<void> | null = null;
  private jwks: JwksKeySource | null = null;
  private timer: NodeJS.Timeout | null = null;
  private closed = false;
  private readonly rules: ClaimRules;

  constructor(private readonly opts: OidcClientOptions) {
    const t = opts.cfg.discovery.timeoutMs;
    this.agent = new Agent({ connect: { timeout: t }, headersTimeout: t, bodyTimeout: t, connections: 8 });
    this.rules = {
      // OIDC Core §2: these claims are always in an ID token; fast-jwt checks iss/aud only when present.
      requiredClaims: ['iss', 'aud', 'sub', 'exp', 'iat'],
      allowedIss: opts.cfg.issuer,
      allowedAud: [opts.cfg.clientId],
      clockTolerance: opts.cfg.clockToleranceSec * 1000,
    };
  }

  /** A provider that is down at start-up does not stop the gateway: logins answer 503 until discovery succeeds. */
  async init(): Promise<void> {
    await this.discover();
    this.timer = setInterval(() => void this.discover(), this.opts.cfg.discovery.refreshMs);
    this.timer.unref();
  }

  async close(): Promise<void> {
    this.closed = true;
    if (this.timer) clearInterval(this.timer);
    await this.jwks?.close();
    await this.agent.close();
  }

  /** The provider's metadata; rejects with AuthFailure (503) while discovery has never succeeded. */
  async provider(): Promise<ProviderMetadata> {
    if (this.metadata !== null) return this.metadata;
    if (performance.now() - this.lastAttemptAt >= this.opts.cfg.discovery.retryMs || this.inflight !== null) await this.discover();
    if (this.metadata !== null) return this.metadata;
    throw new AuthFailure(`the identity provider cannot be reached: ${this.discoveryError}`, true);
  }

  private discover(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.inflight ??= this.readDiscovery().finally(() => {
      this.inflight = null;
    });
    return this.inflight;
  }

  private async readDiscovery(): Promise<void> {
    this.lastAttemptAt = performance.now();
    const issuer = this.opts.cfg.issuer;
    const url = `${issuer.replace(/\/$/, '')}/.well-known/openid-configuration`;
    try {
      const { status, body } = await this.send(url, 'GET', undefined, { accept: 'application/json' });
      if (status !== 200) throw new ProviderError(`${url} answered ${status}`);
      const doc = parseJson(body);
      // OIDC Discovery §4.3: the document must name exactly the issuer it was read for.
      if (doc.issuer !== issuer) throw new ProviderError(`the discovery document names issuer ${JSON.stringify(doc.issuer)}, not ${JSON.stringify(issuer)}`);
      const methods = doc.code_challenge_methods_supported;
      if (Array.isArray(methods) && !methods.includes('S256')) throw new ProviderError('the provider does not support PKCE with S256');
      const metadata: ProviderMetadata = {
        issuer,
        authorizationEndpoint: endpoint(doc, 'authorization_endpoint', true)!,
        tokenEndpoint: endpoint(doc, 'token_endpoint', true)!,
        jwksUri: endpoint(doc, 'jwks_uri', true)!,
        endSessionEndpoint: endpoint(doc, 'end_session_endpoint', false),
      };
      if (this.jwks === null || this.metadata?.jwksUri !== metadata.jwksUri) await this.useKeys(metadata.jwksUri);
      this.metadata = metadata;
    } catch (err) {
      this.discoveryError = (err as Error).message;
      this.opts.log.error({ err: { message: this.discoveryError }, issuer }, 'OIDC discovery failed');
    }
  }

  private async useKeys(jwksUri: string): Promise<void> {
    const d = this.opts.cfg.discovery;
    const next = new JwksKeySource({
      url: jwksUri,
      cooldownMs: 30000,
      refreshMs: Math.max(d.refreshMs, 60000),
      timeoutMs: d.timeoutMs,
      maxBytes: d.maxBytes,
      algorithms: this.opts.cfg.algorithms,
      rules: this.rules,
      log: this.opts.log,
      fetches: this.opts.jwksFetches,
    });
    await next.init();
    const old = this.jwks;
    this.jwks = next;
    await old?.close();
  }

  /**
   * Verifies an ID token's signature (keys of the provider's JWKS, configured algorithms only) and
   * claims: exact iss, aud containing the client id, azp when there are several audiences, finite
   * dates. The nonce is the caller's to check. Throws AuthFailure.
   */
  async verifyIdToken(token: string): Promise<Record<string, unknown>> {
    const jwks = this.jwks;
    if (jwks === null) throw new AuthFailure('the identity provider keys are not known yet', true);
    const kid = tokenKid(token);
    const verify: KeyVerifier = jwks.verifierFor(kid) ?? (await jwks.refetchFor(kid));
    let decoded: VerifiedToken;
    try {
      decoded = verify(token);
    } catch (err) {
      throw new AuthFailure(tokenMessage(err).replace('the token', 'the ID token'));
    }
    const payload = decoded.payload;
    checkTimeClaims(payload);
    const aud = payload.aud;
    if (Array.isArray(aud) && aud.length > 1 && payload.azp !== this.opts.cfg.clientId) {
      throw new AuthFailure('the ID token names several audiences but is not authorized for this client (azp)');
    }
    return payload;
  }

  /** POSTs a grant to the token endpoint. Rejects with GrantRefused (a 4xx error answer), ProviderError, or AuthFailure (503) when unreachable. */
  async grant(params: Record<string, string>): Promise<TokenResponse> {
    const meta = await this.provider();
    const cfg = this.opts.cfg;
    const form = new URLSearchParams(params);
    const headers: Record<string, string> = { accept: 'application/json', 'content-type': 'application/x-www-form-urlencoded' };
    if (cfg.clientSecret === undefined) form.set('client_id', cfg.clientId);
    else if (cfg.clientAuth === 'client_secret_post') {
      form.set('client_id', cfg.clientId);
      form.set('client_secret', cfg.clientSecret);
    } else {
      // RFC 6749 §2.3.1: both parts are form-encoded before Basic encoding.
      const enc = (s: string) => encodeURIComponent(s).replace(/%20/g, '+');
      headers.authorization = `Basic ${Buffer.from(`${enc(cfg.clientId)}:${enc(cfg.clientSecret)}`).toString('base64')}`;
    }
    let answer: { status: number; body: string };
    try {
      answer = await this.send(meta.tokenEndpoint, 'POST', form.toString(), headers);
    } catch (err) {
      if (err instanceof ProviderError) throw err;
      throw new AuthFailure(`the token endpoint cannot be reached: ${(err as Error).message}`, true);
    }
    const { status, body } = answer;
    if (status >= 500) throw new ProviderError(`the token endpoint answered ${status}`);
    let doc: Record<string, unknown>;
    try {
      doc = parseJson(body);
    } catch {
      throw new ProviderError(`the token endpoint answered ${status} without a JSON body`);
    }
    if (status !== 200) {
      const error = typeof doc.error === 'string' && /^[\x20-\x21\x23-\x5b\x5d-\x7e]{1,64}$/.test(doc.error) ? doc.error : 'unknown_error';
      if (status >= 400 && status < 500) throw new GrantRefused(error);
      throw new ProviderError(`the token endpoint answered ${status}`);
    }
    if (typeof doc.access_token !== 'string' || doc.access_token === '') throw new ProviderError('the token response has no access_token');
    if (typeof doc.token_type !== 'string' || doc.token_type.toLowerCase() !== 'bearer') throw new ProviderError('the token response is not of type Bearer');
    const expiresIn = doc.expires_in;
    const accessExpiresAt = typeof expiresIn === 'number' && Number.isFinite(expiresIn) && expiresIn > 0 ? Date.now() + expiresIn * 1000 : null;
    return {
      accessToken: doc.access_token,
      accessExpiresAt,
      idToken: typeof doc.id_token === 'string' ? doc.id_token : undefined,
      refreshToken: typeof doc.refresh_token === 'string' ? doc.refresh_token : undefined,
      scope: typeof doc.scope === 'string' ? doc.scope : undefined,
    };
  }

  /** One bounded request: deadline and size limit from `discovery`; only http(s) URLs from configuration or discovery. */
  private async send(url: string, method: 'GET' | 'POST', body: string | undefined, headers: Record<string, string>): Promise<{ status: number; body: string }> {
    const u = new URL(url);
    const d = this.opts.cfg.discovery;
    const res = await this.agent.request({
      origin: u.origin,
      path: u.pathname + u.search,
      method,
      headers,
      body,
      signal: AbortSignal.timeout(d.timeoutMs),
    });
    const chunks: Buffer[] = [];
    let size = 0;
    for await (const chunk of res.body as AsyncIterable<Buffer>) {
      size += chunk.length;
      if (size > d.maxBytes) {
        res.body.destroy();
        throw new ProviderError(`${u.origin}${u.pathname} sent more than ${d.maxBytes} bytes`);
      }
      chunks.push(chunk);
    }
    return { status: res.statusCode, body: Buffer.concat(chunks).toString('utf8') };
  }
}

function parseJson(text: string): Record<string, unknown> {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch {
    throw new ProviderError('the provider sent a body that is not JSON');
  }
  if (doc === null || typeof doc !== 'object' || Array.isArray(doc)) throw new ProviderError('the provider sent JSON that is not an object');
  return doc as Record<string, unknown>;
}

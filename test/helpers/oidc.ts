import { generateKeyPairSync, randomBytes, type KeyObject } from 'node:crypto';
import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import type { Test } from 'tap';
import { startGateway, type TestConfig, type TestGateway } from './gateway';
import { call, type Answer } from './http';
import { freePort } from './redis';
import { startUpstream, type TestUpstream } from './upstream';

export const CLIENT_ID = 'gateway';
export const CLIENT_SECRET = 'gateway-client-secret-for-tests';

export interface Account {
  roles?: string[];
  email?: string;
  name?: string;
}

export interface ProviderOptions {
  redirectUris: string[];
  postLogoutRedirectUris?: string[];
  /** Seconds an access token lives (default 3600). */
  accessTokenTtl?: number;
  accounts?: Record<string, Account>;
}

export interface TestProvider {
  issuer: string;
  port: number;
  close(): Promise<void>;
}

/** oidc-provider is an ES module: loaded with require(esm), which this Node supports. */
// eslint-disable-next-line @typescript-eslint/no-require-imports
const loadProvider = (): new (issuer: string, cfg: Record<string, unknown>) => { callback(): (req: unknown, res: unknown) => void } => {
  const mod = require('oidc-provider') as { default?: unknown };
  return (mod.default ?? mod) as never;
};

let signingKey: KeyObject | null = null;
/** One RSA key per test process: generating one per provider is most of a provider's start-up. */
function providerKey(): KeyObject {
  return (signingKey ??= generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey);
}

/**
 * A real OpenID provider (oidc-provider, with its development login and consent pages) on
 * 127.0.0.1:0, one confidential client, refresh tokens for every code grant, rotating.
 */
export async function startOidcProvider(opts: ProviderOptions): Promise<TestProvider> {
  const sockets = new Set<Socket>();
  const server: Server = createServer();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  const issuer = `http://127.0.0.1:${port}`;
  const Provider = loadProvider();
  const accounts = opts.accounts ?? {};
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        redirect_uris: opts.redirectUris,
        post_logout_redirect_uris: opts.postLogoutRedirectUris ?? [],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    jwks: { keys: [{ ...providerKey().export({ format: 'jwk' }), kid: 'test-key', use: 'sig', alg: 'RS256' }] },
    cookies: { keys: ['provider-cookie-key-for-tests'] },
    features: { devInteractions: { enabled: true }, rpInitiatedLogout: { enabled: true } },
    pkce: { required: () => true },
    claims: { openid: ['sub'], email: ['email'], roles: ['roles'], profile: ['name'] },
    // The claims go into the ID token (as most providers do), not only to the userinfo endpoint.
    conformIdTokenClaims: false,
    issueRefreshToken: async () => true,
    rotateRefreshToken: true,
    ttl: { AccessToken: opts.accessTokenTtl ?? 3600, IdToken: 3600, RefreshToken: 86400, Grant: 86400, Session: 86400, Interaction: 600, AuthorizationCode: 60 },
    findAccount: async (_ctx: unknown, id: string) => ({
      accountId: id,
      claims: async () => ({ sub: id, email: accounts[id]?.email ?? `${id}@example.test`, roles: accounts[id]?.roles ?? [], name: accounts[id]?.name ?? id }),
    }),
  });
  server.on('request', provider.callback());
  return {
    issuer,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** A cookie jar of one site: name → value, updated from Set-Cookie (Max-Age=0 removes). */
export class Jar {
  readonly cookies = new Map<string, string>();

  take(answer: Answer): void {
    const set = answer.headers['set-cookie'] ?? [];
    for (const line of set) {
      const first = line.split(';')[0];
      const eq = first.indexOf('=');
      const name = first.slice(0, eq).trim();
      const value = first.slice(eq + 1).trim();
      if (/;\s*max-age=0/i.test(line) || /;\s*expires=Thu, 01 Jan 1970/i.test(line)) this.cookies.delete(name);
      else this.cookies.set(name, value);
    }
  }

  header(): string {
    return [...this.cookies].map(([k, v]) => `${k}=${v}`).join('; ');
  }
}

const HTML = 'text/html,application/xhtml+xml';

/** GET `url` with the jar's cookies, taking the cookies of the answer. */
export async function get(url: string, jar: Jar, headers: Record<string, string> = {}): Promise<Answer> {
  const u = new URL(url);
  const cookie = jar.header();
  const answer = await call(u.origin, u.pathname + u.search, { headers: { accept: HTML, ...(cookie ? { cookie } : {}), ...headers } });
  jar.take(answer);
  return answer;
}

async function post(url: string, jar: Jar, form: Record<string, string>): Promise<Answer> {
  const u = new URL(url);
  const answer = await call(u.origin, u.pathname, {
    method: 'POST',
    headers: { accept: HTML, cookie: jar.header(), 'content-type': 'application/x-www-form-urlencoded' },
    body: new URLSearchParams(form).toString(),
  });
  jar.take(answer);
  return answer;
}

function location(a: Answer, base: string): string {
  if (a.status < 300 || a.status > 399 || a.headers.location === undefined) throw new Error(`expected a redirect from ${base}, got ${a.status}: ${a.body.slice(0, 300)}`);
  return new URL(a.headers.location, base).href;
}

/**
 * Logs `user` in at the provider as a browser would, starting from the provider's authorization
 * URL: the login form, the consent form, redirects followed by hand. Returns the callback URL the
 * provider sent the browser to (code, state, iss).
 */
export async function authorizeAtProvider(authorizeUrl: string, user: string, providerJar = new Jar()): Promise<string> {
  let url = authorizeUrl;
  for (let hops = 0; hops < 12; hops++) {
    const a = await get(url, providerJar);
    if (a.status === 200) {
      const action = /action="([^"]+)"/.exec(a.body)?.[1];
      const prompt = /name="prompt" value="([^"]+)"/.exec(a.body)?.[1];
      if (!action || !prompt) throw new Error(`unexpected provider page: ${a.body.slice(0, 300)}`);
      const form: Record<string, string> = prompt === 'login' ? { prompt, login: user, password: 'any' } : { prompt };
      url = location(await post(new URL(action, url).href, providerJar, form), url);
      continue;
    }
    const next = location(a, url);
    if (!next.startsWith(new URL(authorizeUrl).origin)) return next;
    url = next;
  }
  throw new Error('the provider did not send the browser back');
}

export interface Login {
  /** The gateway's cookies after the login (the session). */
  jar: Jar;
  /** The callback URL the provider produced, for replay tests. */
  callbackUrl: string;
  /** The login-state cookie the gateway set when the login started. */
  loginCookie: string;
  /** Where the callback sent the browser. */
  landedAt: string;
}

/** A full login through the gateway: the protected page, the provider, the callback. */
export async function loginThroughGateway(gatewayUrl: string, path: string, user: string): Promise<Login> {
  const jar = new Jar();
  const start = await get(gatewayUrl + path, jar);
  const authorizeUrl = location(start, gatewayUrl);
  const loginCookie = jar.header();
  const callbackUrl = await authorizeAtProvider(authorizeUrl, user);
  const back = await get(callbackUrl, jar);
  const landedAt = location(back, callbackUrl);
  return { jar, callbackUrl, loginCookie, landedAt };
}

/** The gateway and provider of one OIDC test: the gateway port is chosen first, so the provider knows the redirect URI. */
const sessionKey = () => randomBytes(32).toString('base64');
export const K1 = sessionKey();
export const K2 = sessionKey();

export interface Setup {
  provider: TestProvider;
  upstream: TestUpstream;
  port: number;
  redirectUri: string;
}

export async function setup(t: Test, accessTokenTtl = 3600): Promise<Setup> {
  const port = await freePort();
  const redirectUri = `http://127.0.0.1:${port}/oidc/callback`;
  const provider = await startOidcProvider({
    redirectUris: [redirectUri],
    postLogoutRedirectUris: [`http://127.0.0.1:${port}/bye`],
    accessTokenTtl,
    accounts: { alice: { roles: ['admin', 'staff'], email: 'alice@example.test' }, bigname: { name: 'x'.repeat(6000) } },
  });
  const upstream = await startUpstream();
  t.teardown(() => Promise.all([provider.close(), upstream.close()]));
  return { provider, upstream, port, redirectUri };
}

export function config(s: Setup, oidc: Record<string, unknown> = {}, port = s.port): TestConfig {
  return {
    listen: { port },
    upstreams: { up: { targets: [s.upstream.url] } },
    auth: {
      oidc: {
        issuer: s.provider.issuer,
        clientId: CLIENT_ID,
        clientSecret: CLIENT_SECRET,
        redirectUri: s.redirectUri,
        scopes: ['openid', 'email', 'roles'],
        postLogoutRedirectUri: `http://127.0.0.1:${s.port}/bye`,
        claimHeaders: { 'X-User-Email': 'email' },
        refreshBeforeSec: 0,
        session: { keys: [K1], secure: false },
        ...oidc,
      },
    },
    routes: [{ name: 'app', match: { prefix: '/' }, upstream: 'up', auth: { methods: ['oidc'] } }],
  } as TestConfig;
}

export async function gateway(t: Test, cfg: TestConfig): Promise<TestGateway> {
  const gw = await startGateway(cfg);
  t.teardown(() => gw.close());
  return gw;
}

export const api = { accept: 'application/json' };

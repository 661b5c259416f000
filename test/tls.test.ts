import { spawn } from 'node:child_process';
import { mkdirSync, readFileSync, renameSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import { createServer as createHttpsServer, request as httpsRequest } from 'node:https';
import { connect as netConnect, type AddressInfo } from 'node:net';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { connect, type PeerCertificate, type TLSSocket } from 'node:tls';
import t from 'tap';
import { parseConfig } from '../src/config/load';
import { ConfigError } from '../src/config/problem';
import type { Gateway } from '../src/app';
import { makeCa, type Issued, type TestCa } from './helpers/certs';
import { startGateway, withTestDefaults, type TestConfig, type TestGateway } from './helpers/gateway';
import { call } from './helpers/http';
import { freePort } from './helpers/redis';
import { startUpstream, type TestUpstream } from './helpers/upstream';

const ca = makeCa();
const other = makeCa('Other CA');
t.teardown(() => {
  rmSync(ca.dir, { recursive: true, force: true });
  rmSync(other.dir, { recursive: true, force: true });
});
const certs = {
  fallback: ca.issue('default', { dns: ['default.test'] }),
  a: ca.issue('a', { dns: ['a.example.com'] }),
  wildcard: ca.issue('wildcard', { dns: ['*.example.com'] }),
  client: ca.issue('client', { cn: 'billing-service', client: true, dns: ['billing.internal'] }),
};

const ADMIN_TOKEN = 'admin-token-0123456789abcdef';

function tlsPort(gateway: Gateway): number {
  return (gateway.servers[gateway.servers.length - 1].address() as AddressInfo).port;
}

interface Shake {
  cert: PeerCertificate;
  alpn: string | false | null;
  protocol: string | null;
}

/** One TLS handshake with the gateway; resolves with what the server presented. */
function handshake(port: number, opts: { servername?: string; minVersion?: 'TLSv1.1' | 'TLSv1.2'; maxVersion?: 'TLSv1.1' | 'TLSv1.2'; ciphers?: string } = {}): Promise<Shake> {
  return new Promise((resolve, reject) => {
    const socket: TLSSocket = connect({ host: '127.0.0.1', port, ca: ca.ca, ALPNProtocols: ['h2', 'http/1.1'], checkServerIdentity: () => undefined, ...opts }, () => {
      resolve({ cert: socket.getPeerCertificate(), alpn: socket.alpnProtocol, protocol: socket.getProtocol() });
      socket.end();
    });
    socket.on('error', reject);
  });
}

interface HttpsAnswer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

/** One HTTPS request over a fresh connection. */
function httpsCall(port: number, path: string, opts: { servername?: string; cert?: Issued; headers?: Record<string, string> } = {}): Promise<HttpsAnswer> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port,
        path,
        servername: opts.servername ?? 'a.example.com',
        headers: { host: opts.servername ?? 'a.example.com', ...opts.headers },
        ca: ca.ca,
        ...(opts.cert ? { cert: opts.cert.cert, key: opts.cert.key } : {}),
        agent: false,
        timeout: 10000,
      },
      (res) => {
        const chunks: Buffer[] = [];
        res.on('data', (c: Buffer) => chunks.push(c));
        res.on('error', reject);
        res.on('end', () => resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks).toString('utf8') }));
      },
    );
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

function problemsOf(fn: () => unknown): string[] {
  try {
    fn();
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: ${p.message}`);
    throw err;
  }
  return [];
}

function tlsListen(extra: Record<string, unknown> = {}): TestConfig['listen'] {
  return {
    tls: {
      port: 0,
      certificates: [certs.fallback, certs.a, certs.wildcard].map((c) => ({ certFile: c.certFile, keyFile: c.keyFile })),
      ...extra,
    },
  } as TestConfig['listen'];
}

async function gatewayWith(upstream: TestUpstream, listen: TestConfig['listen'], more: TestConfig = {}): Promise<TestGateway> {
  return startGateway({
    listen,
    upstreams: { up: { targets: [upstream.url] } },
    routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }],
    ...more,
  });
}

t.test('SNI picks the exact certificate, then a one-label wildcard, then the default; ALPN prefers h2', async (t) => {
  const up = await startUpstream();
  const gw = await gatewayWith(up, tlsListen());
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const port = tlsPort(gw.gateway);
  const a = await handshake(port, { servername: 'a.example.com' });
  t.equal(a.cert.serialNumber, certs.a.serial, 'exact name');
  t.equal(a.alpn, 'h2', 'h2 is offered first and served (listen.tls.http2)');
  t.equal((await handshake(port, { servername: 'A.Example.COM' })).cert.serialNumber, certs.a.serial, 'names compare case-insensitively');
  t.equal((await handshake(port, { servername: 'b.example.com' })).cert.serialNumber, certs.wildcard.serial, 'wildcard');
  t.equal((await handshake(port, { servername: 'x.b.example.com' })).cert.serialNumber, certs.fallback.serial, 'a wildcard covers one label only');
  t.equal((await handshake(port, { servername: 'example.com' })).cert.serialNumber, certs.fallback.serial, 'a wildcard does not cover its parent');
  t.equal((await handshake(port, { servername: 'unknown.test' })).cert.serialNumber, certs.fallback.serial, 'unknown name: default');
  t.equal((await handshake(port)).cert.serialNumber, certs.fallback.serial, 'no SNI (an IP address): default');

  const res = await httpsCall(port, '/hello?x=1');
  t.equal(res.status, 200, 'HTTPS is proxied through the chain');
  t.equal(up.seen.at(-1)?.url, '/hello?x=1');
  const plain = await call(gw.url, '/plain');
  t.equal(plain.status, 200, 'the plain listener serves beside the TLS one');
  t.equal(gw.gateway.servers.length, 2, 'both node servers are listed for upgrade handlers');
  const metrics = await call(gw.adminUrl, '/metrics');
  t.match(metrics.body, /route="r"/, 'one set of metrics for both listeners');
});

t.test('the minimum TLS version is enforced', async (t) => {
  const up = await startUpstream();
  const gw12 = await gatewayWith(up, tlsListen());
  const gw13 = await gatewayWith(up, tlsListen({ minVersion: 'TLSv1.3' }));
  t.teardown(async () => {
    await Promise.all([gw12.close(), gw13.close()]);
    await up.close();
  });
  // SECLEVEL=0 lets this client offer TLS 1.1 at all: the refusal must come from the gateway.
  await t.rejects(
    handshake(tlsPort(gw12.gateway), { servername: 'a.example.com', minVersion: 'TLSv1.1', maxVersion: 'TLSv1.1', ciphers: 'DEFAULT@SECLEVEL=0' }),
    { code: /ERR_SSL_(TLSV1_ALERT_PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL)/ },
    'a TLS 1.1 client fails the handshake by default',
  );
  t.equal((await handshake(tlsPort(gw12.gateway), { servername: 'a.example.com', maxVersion: 'TLSv1.2' })).protocol, 'TLSv1.2', 'TLS 1.2 is accepted by default');
  await t.rejects(
    handshake(tlsPort(gw13.gateway), { servername: 'a.example.com', maxVersion: 'TLSv1.2' }),
    { code: /ERR_SSL_(TLSV1_ALERT_PROTOCOL_VERSION|UNSUPPORTED_PROTOCOL)/ },
    'minVersion TLSv1.3 refuses TLS 1.2',
  );
  t.equal((await handshake(tlsPort(gw13.gateway), { servername: 'a.example.com' })).protocol, 'TLSv1.3');
});

t.test('TLS only: the plain listener can be turned off', async (t) => {
  const up = await startUpstream();
  const gw = await gatewayWith(up, { ...tlsListen(), plain: false } as TestConfig['listen']);
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  t.equal(gw.gateway.servers.length, 1);
  t.equal(tlsPort(gw.gateway), gw.port, 'the TLS listener is the only one');
  t.equal((await httpsCall(gw.port, '/x')).status, 200);
});

t.test('listen.tls.http2: false offers http/1.1 only', async (t) => {
  const up = await startUpstream();
  const gw = await gatewayWith(up, tlsListen({ http2: false }));
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  t.equal((await handshake(tlsPort(gw.gateway), { servername: 'a.example.com' })).alpn, 'http/1.1');
  t.equal((await httpsCall(tlsPort(gw.gateway), '/x')).status, 200);
});

t.test('configuration problems name the field and the file', async (t) => {
  const base = { upstreams: { up: { targets: ['http://127.0.0.1:1'] } } };
  const parse = (cfg: TestConfig) => parseConfig(withTestDefaults({ ...base, ...cfg }));
  t.same(problemsOf(() => parse({ listen: { plain: false } })), ['listen.plain: the plain listener may only be turned off when listen.tls is set']);
  const missing = join(ca.dir, 'missing.pem');
  const bad = problemsOf(() => parse({ listen: { tls: { certificates: [{ certFile: missing, keyFile: certs.a.keyFile }] } } as TestConfig['listen'] }));
  t.equal(bad.length, 1);
  t.match(bad[0], `listen.tls.certificates[0].certFile: cannot read ${missing}`);
  t.match(
    problemsOf(() => parse({ listen: { tls: { certificates: [{ certFile: certs.a.certFile, keyFile: certs.wildcard.keyFile }] } } as TestConfig['listen'] })),
    [/^listen\.tls\.certificates\[0\]: .*a\.pem \/ .*wildcard\.key: .*key values mismatch/],
  );
  t.same(problemsOf(() => parse({ listen: tlsListen({ clientCertificates: { mode: 'require' } }) })), [
    'listen.tls.clientCertificates.caFile: is required when mode is require',
  ]);
  t.same(problemsOf(() => parse({ upstreams: { up: { targets: ['https://127.0.0.1:1'], tls: { certFile: certs.client.certFile } } } })), [
    'upstreams.up.tls.keyFile: is required with certFile',
  ]);
  const expired = ca.issue('client-expired', { client: true, days: -1 });
  t.match(problemsOf(() => parse({ upstreams: { up: { targets: ['https://127.0.0.1:1'], tls: { certFile: expired.certFile, keyFile: expired.keyFile } } } })), [
    /^upstreams\.up\.tls\.certFile: .*client-expired\.pem expired on /,
  ]);
});

/** A config file whose certificate for a.example.com lives at fixed paths the test rewrites. */
function reloadable(dir: string, upstream: string, watch: boolean): { file: string; certFile: string; keyFile: string } {
  const certFile = join(dir, 'live.crt');
  const keyFile = join(dir, 'live.key');
  const file = join(dir, `gateway-${watch ? 'watch' : 'manual'}.json`);
  const cfg = {
    listen: { tls: { port: 0, certificates: [{ certFile: certs.fallback.certFile, keyFile: certs.fallback.keyFile }, { certFile, keyFile }] } },
    reload: { watch, watchIntervalMs: 100 },
    admin: { token: ADMIN_TOKEN },
    upstreams: { up: { targets: [upstream] } },
    routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }],
  };
  writeFileSync(file, JSON.stringify(withTestDefaults(cfg as TestConfig)));
  return { file, certFile, keyFile };
}

t.test('a reload swaps changed certificates; a bad file is rejected with its path and the old one keeps serving', async (t) => {
  const up = await startUpstream();
  const dir = join(ca.dir, 'manual');
  mkdirSync(dir);
  const { file, certFile, keyFile } = reloadable(dir, up.url, false);
  const v1 = ca.issue('live-v1', { dns: ['a.example.com'] });
  const v2 = ca.issue('live-v2', { dns: ['a.example.com'] });
  writeFileSync(certFile, v1.cert);
  writeFileSync(keyFile, v1.key);
  const cfg = JSON.parse(readFileSync(file, 'utf8')) as TestConfig;
  const gw = await startGateway(cfg, {}, { configFile: file });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const port = tlsPort(gw.gateway);
  t.equal((await handshake(port, { servername: 'a.example.com' })).cert.serialNumber, v1.serial);

  const unchanged = await gw.gateway.reloadFromSource('test');
  t.equal(unchanged.certificates, 'unchanged');
  t.same(unchanged.restartRequired, []);

  writeFileSync(certFile, v2.cert);
  writeFileSync(keyFile, v2.key);
  const result = await gw.gateway.reloadFromSource('test');
  t.equal(result.certificates, 'reloaded');
  t.same(result.restartRequired, [], 'certificates reload without a restart');
  t.equal((await handshake(port, { servername: 'a.example.com' })).cert.serialNumber, v2.serial, 'new connections see the new certificate');
  t.equal((await handshake(port)).cert.serialNumber, certs.fallback.serial, 'the default certificate is still the first one');

  writeFileSync(certFile, 'not a certificate\n');
  const err = await gw.gateway.reloadFromSource('test').catch((e: unknown) => e);
  t.type(err, ConfigError);
  t.match((err as ConfigError).problems, [{ path: 'listen.tls.certificates[1].certFile', message: new RegExp(`${certFile.replace(/[.\\/]/g, '\\$&')}`) }]);
  t.equal((await handshake(port, { servername: 'a.example.com' })).cert.serialNumber, v2.serial, 'the old certificate keeps serving');

  // Through the admin API the problem and its path reach the operator.
  writeFileSync(certFile, v1.cert);
  writeFileSync(keyFile, v2.key);
  const admin = await call(gw.adminUrl, '/admin/reload', { method: 'POST', headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  t.equal(admin.status, 400, 'a certificate that does not match its key is refused');
  t.match(admin.json().errors, [{ path: 'listen.tls.certificates[1]', message: /live\.crt \/ .*live\.key: .*key values mismatch/ }]);
  t.ok(
    gw.logs.some((l) => l.action === 'reload' && l.result === 'rejected' && String(l.errors).startsWith('listen.tls.certificates[1]: ')),
    'the rejected reload is logged with the field and the file',
  );
  t.equal((await handshake(port, { servername: 'a.example.com' })).cert.serialNumber, v2.serial);
});

t.test('watched certificate files rotate like a Kubernetes Secret (symlink swap)', async (t) => {
  const up = await startUpstream();
  const dir = join(ca.dir, 'secret');
  mkdirSync(dir);
  // The layout kubelet writes: tls.crt -> ..data/tls.crt, ..data -> ..<timestamp>/, swapped atomically.
  const version = (n: number, cert: Issued): string => {
    const d = join(dir, `..v${n}`);
    mkdirSync(d);
    writeFileSync(join(d, 'live.crt'), cert.cert);
    writeFileSync(join(d, 'live.key'), cert.key);
    return `..v${n}`;
  };
  const v1 = ca.issue('secret-v1', { dns: ['a.example.com'] });
  const v2 = ca.issue('secret-v2', { dns: ['a.example.com'] });
  symlinkSync(version(1, v1), join(dir, '..data'));
  const { file } = reloadable(dir, up.url, true);
  symlinkSync('..data/live.crt', join(dir, 'live.crt'));
  symlinkSync('..data/live.key', join(dir, 'live.key'));
  const cfg = JSON.parse(readFileSync(file, 'utf8')) as TestConfig;
  const gw = await startGateway(cfg, {}, { configFile: file });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const port = tlsPort(gw.gateway);
  t.equal((await handshake(port, { servername: 'a.example.com' })).cert.serialNumber, v1.serial);

  symlinkSync(version(2, v2), join(dir, '..data_tmp'));
  renameSync(join(dir, '..data_tmp'), join(dir, '..data'));
  let serial = '';
  for (let i = 0; i < 50 && serial !== v2.serial; i++) {
    await sleep(100);
    serial = (await handshake(port, { servername: 'a.example.com' })).cert.serialNumber;
  }
  t.equal(serial, v2.serial, 'the rotated certificate serves without a restart');
  t.ok(gw.logs.some((l) => l.actor === 'certificate-watch' && l.result === 'applied'), 'the reload is logged as a certificate rotation');
});

t.test('client certificates at the edge', async (t) => {
  const up = await startUpstream();
  const probe = (ctx: { clientCert: { subject: string; subjectAltName: string[] } | null; addResponseHeader(n: string, v: string): void }): boolean => {
    const c = ctx.clientCert;
    ctx.addResponseHeader('x-client-cert', c ? `${c.subject} ${c.subjectAltName.join(' ')}` : 'none');
    return true;
  };
  const plugins = () => [{ name: 'probe', stepFor: () => ({ name: 'probe', run: probe }) }];
  const start = (mode: string) =>
    startGateway(
      {
        listen: tlsListen({ clientCertificates: { mode, caFile: ca.caFile } }),
        upstreams: { up: { targets: [up.url] } },
        routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }],
      },
      {},
      { plugins },
    );
  const required = await start('require');
  const requested = await start('request');
  t.teardown(async () => {
    await Promise.all([required.close(), requested.close()]);
    await up.close();
  });
  const stranger = other.issue('stranger', { cn: 'stranger', client: true });

  const ok = await httpsCall(tlsPort(required.gateway), '/x', { cert: certs.client });
  t.equal(ok.status, 200);
  t.equal(ok.headers['x-client-cert'], 'CN=billing-service DNS:billing.internal', 'subject and SAN reach the chain');
  await t.rejects(httpsCall(tlsPort(required.gateway), '/x'), 'require: no certificate, no request');
  await t.rejects(httpsCall(tlsPort(required.gateway), '/x', { cert: stranger }), 'require: a certificate of another CA is refused');

  t.equal((await httpsCall(tlsPort(requested.gateway), '/x', { cert: certs.client })).headers['x-client-cert'], 'CN=billing-service DNS:billing.internal');
  t.equal((await httpsCall(tlsPort(requested.gateway), '/x')).headers['x-client-cert'], 'none', 'request: no certificate is fine');
  const unverified = await httpsCall(tlsPort(requested.gateway), '/x', { cert: stranger });
  t.equal(unverified.status, 200);
  t.equal(unverified.headers['x-client-cert'], 'none', 'request: an unverified certificate is not exposed');
  t.equal((await call(requested.url, '/x')).headers['x-client-cert'], 'none', 'plain listener: none');
});

t.test('redirect to HTTPS per route and HSTS on TLS responses only', async (t) => {
  const up = await startUpstream((_req, res) => {
    res.writeHead(200, { 'strict-transport-security': 'max-age=1', 'content-length': '2' });
    res.end('ok');
  });
  const port = await freePort();
  const gw = await startGateway({
    listen: { tls: { port, certificates: [{ certFile: certs.a.certFile, keyFile: certs.a.keyFile }], hsts: { maxAgeSeconds: 600 } } } as TestConfig['listen'],
    trustedProxies: ['127.0.0.1'],
    upstreams: { up: { targets: [up.url] } },
    routes: [
      { name: 'secure', match: { prefix: '/secure' }, upstream: 'up', https: { redirect: true, hsts: { maxAgeSeconds: 31536000, includeSubDomains: true, preload: true } } },
      { name: 'moved', match: { prefix: '/moved' }, upstream: 'up', https: { redirect: true, redirectStatus: 301, redirectPort: 443 } },
      { name: 'open', match: { prefix: '/open' }, upstream: 'up' },
    ],
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const get = await call(gw.url, '/secure/a/b?x=1&y=%20', { headers: { host: 'a.example.com:8080' } });
  t.equal(get.status, 308);
  t.equal(get.headers.location, `https://a.example.com:${port}/secure/a/b?x=1&y=%20`, 'path and query kept, host from Host, the TLS port');
  t.equal(get.headers['strict-transport-security'], undefined, 'never HSTS over plain HTTP');
  const post = await call(gw.url, '/moved/x', { method: 'POST', body: 'data', headers: { host: 'a.example.com' } });
  t.equal(post.status, 308, 'non-GET always 308: the method and body are kept');
  t.equal(post.headers.location, 'https://a.example.com/moved/x', 'port 443 is left out');
  const moved = await call(gw.url, '/moved/x', { headers: { host: 'a.example.com' } });
  t.equal(moved.status, 301);
  t.equal((await call(gw.url, '/secure/x', { headers: { host: 'a.example.com\\@evil' } })).status, 400, 'a Host that cannot be a URL host is refused');
  const proxied = await call(gw.url, '/secure/x', { headers: { host: 'a.example.com', 'x-forwarded-proto': 'https' } });
  t.equal(proxied.status, 200, 'X-Forwarded-Proto https from a trusted proxy is HTTPS already');
  t.equal(proxied.headers['strict-transport-security'], undefined);
  t.equal(up.seen.length, 1, 'redirected requests never reach the upstream');

  const tls = await httpsCall(port, '/secure/x');
  t.equal(tls.status, 200);
  t.equal(tls.headers['strict-transport-security'], 'max-age=31536000; includeSubDomains; preload', "the route's HSTS, not the upstream's");
  t.equal((await httpsCall(port, '/open/x')).headers['strict-transport-security'], 'max-age=600', "the listener's HSTS on every route");
  t.equal((await call(gw.url, '/open/x')).headers['strict-transport-security'], undefined);
  t.match(
    problemsOf(() =>
      parseConfig(withTestDefaults({ upstreams: { up: { targets: [up.url] } }, routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up', https: { hsts: { preload: true } } }] })),
    ),
    ['routes[0].https.hsts.preload: needs includeSubDomains and a maxAgeSeconds of at least 31536000 (the preload list requires both)'],
  );
});

t.test('shutdown drains the TLS listener too: a request in flight finishes, then both listeners close', async (t) => {
  let release: (() => void) | null = null;
  const up = await startUpstream((_req, res) => {
    release = () => res.end('done');
  });
  const gw = await gatewayWith(up, tlsListen());
  t.teardown(() => up.close());
  const port = tlsPort(gw.gateway);
  const inFlight = httpsCall(port, '/slow', { headers: { connection: 'keep-alive' } });
  while (release === null) await sleep(10);
  const closing = gw.gateway.close();
  await sleep(50);
  await t.rejects(handshake(port, { servername: 'a.example.com' }), 'no new TLS connections while draining');
  (release as () => void)();
  const res = await inFlight;
  t.equal(res.status, 200);
  t.equal(res.body, 'done');
  const started = Date.now();
  await closing;
  t.ok(Date.now() - started < 2000, 'close does not wait for idle TLS connections');
  t.equal(gw.gateway.servers.some((s) => s.listening), false);
});

interface TlsUpstream {
  url: string;
  /** Serial of the client certificate of each request, in order. */
  clients: string[];
  close(): Promise<void>;
}

/** A node:https upstream that requires a client certificate signed by `ca`. */
async function startTlsUpstream(server: Issued, clientCa: TestCa, onRequest?: (res: import('node:http').ServerResponse) => void): Promise<TlsUpstream> {
  const clients: string[] = [];
  const srv = createHttpsServer({ cert: server.cert, key: server.key, ca: clientCa.ca, requestCert: true, rejectUnauthorized: true }, (req, res) => {
    clients.push((req.socket as TLSSocket).getPeerCertificate().serialNumber);
    if (onRequest) return onRequest(res);
    res.end('secure');
  });
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  return {
    url: `https://127.0.0.1:${(srv.address() as AddressInfo).port}`,
    clients,
    close: () =>
      new Promise((r) => {
        srv.closeAllConnections();
        srv.close(() => r());
      }),
  };
}

/** `openssl s_server` requiring a client certificate signed by `clientCa` (TLS 1.3), answering every request with 200. */
async function startOpensslUpstream(server: Issued, clientCa: TestCa): Promise<{ url: string; close(): Promise<void> }> {
  const port = await freePort();
  const child = spawn(
    '/usr/bin/openssl',
    ['s_server', '-accept', `127.0.0.1:${port}`, '-cert', server.certFile, '-key', server.keyFile, '-CAfile', clientCa.caFile, '-Verify', '1', '-verify_return_error', '-tls1_3', '-www', '-quiet'],
    { stdio: ['ignore', 'ignore', 'ignore'] },
  );
  for (let i = 0; ; i++) {
    const up = await new Promise<boolean>((resolve) => {
      const s = netConnect(port, '127.0.0.1', () => resolve(true)).on('error', () => resolve(false));
      s.on('connect', () => s.destroy());
    });
    if (up) break;
    if (i > 100) throw new Error('openssl s_server did not start');
    await sleep(50);
  }
  return {
    url: `https://127.0.0.1:${port}`,
    close: () => new Promise((r) => (child.exitCode !== null ? r() : child.once('exit', () => r()).kill())),
  };
}

t.test('mTLS to upstreams: client certificate, CA, server name; TLS failures are 502 UPSTREAM_TLS with a clear log line', async (t) => {
  const upstreamCert = ca.issue('upstream', { dns: ['svc.internal'] });
  const expired = ca.issue('upstream-expired', { dns: ['svc.internal'], days: -1 });
  const foreign = other.issue('foreign-client', { client: true });
  const good = await startTlsUpstream(upstreamCert, ca);
  const stale = await startTlsUpstream(expired, ca);
  // Node's TLS server closes without an alert when a client certificate fails verification;
  // OpenSSL's own server sends unknown_ca, as nginx or Envoy do.
  const strict = await startOpensslUpstream(upstreamCert, ca);
  const tls = { caFile: ca.caFile, servername: 'svc.internal', certFile: certs.client.certFile, keyFile: certs.client.keyFile };
  const gw = await startGateway({
    upstreams: {
      mtls: { targets: [good.url], tls },
      nocert: { targets: [good.url], tls: { caFile: ca.caFile, servername: 'svc.internal' }, retries: { maxRetries: 0 } },
      badcert: { targets: [strict.url], tls: { ...tls, certFile: foreign.certFile, keyFile: foreign.keyFile }, retries: { maxRetries: 0 } },
      wrongca: { targets: [good.url], tls: { ...tls, caFile: other.caFile }, retries: { maxRetries: 0 } },
      expired: { targets: [stale.url], tls, retries: { maxRetries: 0 } },
    },
    routes: ['mtls', 'nocert', 'badcert', 'wrongca', 'expired'].map((n) => ({ name: n, match: { prefix: `/${n}` }, upstream: n })),
  });
  t.teardown(async () => {
    await gw.close();
    await Promise.all([good.close(), stale.close(), strict.close()]);
  });
  const ok = await call(gw.url, '/mtls');
  t.equal(ok.status, 200);
  t.equal(ok.body, 'secure');
  t.equal(good.clients.at(-1), certs.client.serial, 'the upstream saw the client certificate');

  type Logged = { err?: { code?: string }; tlsAlert?: string };
  for (const [path, cause] of [
    // The upstream sends its CA along (OpenSSL completes the chain from its store): a root nobody trusts.
    ['/wrongca', /UNABLE_TO_VERIFY_LEAF_SIGNATURE|UNABLE_TO_GET_ISSUER_CERT|SELF_SIGNED_CERT_IN_CHAIN/],
    ['/expired', /CERT_HAS_EXPIRED/],
    // TLS 1.3: the upstream refuses our certificate (or its absence) after the handshake, with an
    // alert that undici alone would report as "other side closed".
    ['/nocert', /^ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED$/],
    ['/badcert', /^ERR_SSL_TLSV1_ALERT_UNKNOWN_CA$/],
  ] as const) {
    const res = await call(gw.url, path);
    t.equal(res.status, 502, path);
    t.equal(res.json().code, 'UPSTREAM_TLS', `${path}: the code says TLS`);
    const named = (l: Logged) => cause.test(String(l.err?.code)) || cause.test(String(l.tlsAlert));
    const line = gw.logs.find((l) => l.msg === 'upstream request failed' && named(l as Logged));
    t.ok(line, `${path}: the log line names the TLS failure`, { logs: gw.logs.filter((l) => l.msg === 'upstream request failed') });
  }
  t.equal(good.clients.length, 1, 'no refused request reached the upstream handler');
});

t.test('a rotated upstream client certificate is used by new connections after a reload; requests in flight finish', async (t) => {
  const upstreamCert = ca.issue('upstream-rot', { dns: ['svc.internal'] });
  let hold: (() => void) | null = null;
  const up = await startTlsUpstream(upstreamCert, ca, (res) => {
    if (hold === null) {
      hold = () => res.end('slow');
      return;
    }
    res.end('fast');
  });
  const dir = join(ca.dir, 'upstream-rotation');
  mkdirSync(dir);
  const v1 = ca.issue('uclient-v1', { client: true });
  const v2 = ca.issue('uclient-v2', { client: true });
  const certFile = join(dir, 'client.crt');
  const keyFile = join(dir, 'client.key');
  writeFileSync(certFile, v1.cert);
  writeFileSync(keyFile, v1.key);
  const file = join(dir, 'gateway.json');
  const cfg: TestConfig = {
    upstreams: { up: { targets: [up.url], tls: { caFile: ca.caFile, servername: 'svc.internal', certFile, keyFile } } },
    routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }],
  };
  writeFileSync(file, JSON.stringify(withTestDefaults(cfg)));
  const gw = await startGateway(cfg, {}, { configFile: file });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const slow = call(gw.url, '/slow');
  while (hold === null) await sleep(10);
  writeFileSync(certFile, v2.cert);
  writeFileSync(keyFile, v2.key);
  const result = await gw.gateway.reloadFromSource('test');
  t.same(result.upstreams.created, ['up'], 'the upstream is rebuilt around the new certificate');
  const fast = await call(gw.url, '/fast');
  t.equal(fast.body, 'fast');
  t.same(up.clients, [v1.serial, v2.serial], 'the new connection presents the new certificate');
  (hold as () => void)();
  const done = await slow;
  t.equal(done.status, 200, 'the request in flight on the old pool finished');
  t.equal(done.body, 'slow');
});

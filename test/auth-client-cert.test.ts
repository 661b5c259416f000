import { rmSync } from 'node:fs';
import type { IncomingHttpHeaders } from 'node:http';
import { request as httpsRequest, Agent } from 'node:https';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { parseConfig } from '../src/config/load';
import { ConfigError } from '../src/config/problem';
import type { Gateway } from '../src/app';
import { makeCa, type Issued } from './helpers/certs';
import { startGateway, withTestDefaults, type TestConfig } from './helpers/gateway';
import { call } from './helpers/http';
import { metric } from './helpers/ratelimit';
import { startUpstream, type TestUpstream } from './helpers/upstream';

const ca = makeCa();
const other = makeCa('Other CA');
t.teardown(() => {
  rmSync(ca.dir, { recursive: true, force: true });
  rmSync(other.dir, { recursive: true, force: true });
});
const server = ca.issue('server', { dns: ['a.example.com'] });
const billing = ca.issue('billing', { cn: 'billing-service', client: true, dns: ['billing.internal'] });
const reports = ca.issue('reports', { cn: 'reports.internal', client: true, dns: ['reports.internal'] });
const stranger = ca.issue('stranger', { cn: 'nobody-we-know', client: true });
const foreign = other.issue('foreign', { cn: 'billing-service', client: true });

interface Answer {
  status: number;
  headers: IncomingHttpHeaders;
  body: string;
}

function tlsPort(gateway: Gateway): number {
  return (gateway.servers[gateway.servers.length - 1].address() as AddressInfo).port;
}

function httpsCall(port: number, path: string, opts: { cert?: Issued; headers?: Record<string, string>; agent?: Agent } = {}): Promise<Answer> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(
      {
        host: '127.0.0.1',
        port,
        path,
        servername: 'a.example.com',
        headers: { host: 'a.example.com', ...opts.headers },
        ca: ca.ca,
        ...(opts.cert ? { cert: opts.cert.cert, key: opts.cert.key } : {}),
        agent: opts.agent ?? false,
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

function config(up: TestUpstream, clientCert: Record<string, unknown>, mode = 'request'): TestConfig {
  return {
    listen: { tls: { port: 0, certificates: [{ certFile: server.certFile, keyFile: server.keyFile }], clientCertificates: { mode, caFile: ca.caFile } } },
    upstreams: { up: { targets: [up.url] } },
    auth: { clientCert, apiKeys: {} },
    consumers: [{ id: 'billing-service', roles: ['billing', 'reader'] }, { id: 'reports.internal', roles: ['reader'] }],
    routes: [
      { name: 'certs', match: { prefix: '/certs' }, upstream: 'up', auth: { methods: ['clientCert'] } },
      { name: 'billing', match: { prefix: '/billing' }, upstream: 'up', auth: { methods: ['clientCert'], roles: ['billing'] } },
      { name: 'either', match: { prefix: '/either' }, upstream: 'up', auth: { methods: ['apiKey', 'clientCert'] } },
      { name: 'open', match: { prefix: '/open' }, upstream: 'up' },
    ],
  } as TestConfig;
}

t.test('client certificates as credentials: consumer from the subject CN, roles from the consumer, clear refusals', async (t) => {
  const up = await startUpstream();
  const gw = await startGateway(config(up, { forward: true }));
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const port = tlsPort(gw.gateway);
  const spoof = { 'x-client-cert-subject': 'CN=admin', 'x_client_cert_fingerprint': 'AA', 'x-consumer-id': 'admin' };

  const ok = await httpsCall(port, '/certs/x', { cert: billing, headers: spoof });
  t.equal(ok.status, 200);
  const seen = up.seen.at(-1)!.headers;
  t.equal(seen['x-consumer-id'], 'billing-service', 'the consumer is the subject CN');
  t.equal(seen['x-user-roles'], 'billing,reader', "the consumer's roles as usual");
  t.equal(seen['x-client-cert-subject'], 'CN=billing-service', 'the verified subject, not the client-sent one');
  t.match(seen['x-client-cert-fingerprint'], /^([0-9A-F]{2}:){31}[0-9A-F]{2}$/);
  t.notOk('x_client_cert_fingerprint' in seen, 'the underscore spelling is stripped too');
  t.equal((await httpsCall(port, '/billing/x', { cert: billing })).status, 200, 'the role check passes');

  const cases: [string, Issued | undefined, number, string][] = [
    ['/certs/x', undefined, 401, 'CLIENT_CERT_REQUIRED'],
    ['/certs/x', foreign, 401, 'CLIENT_CERT_INVALID'],
    ['/certs/x', stranger, 403, 'CLIENT_CERT_UNKNOWN_CONSUMER'],
    ['/billing/x', reports, 403, 'FORBIDDEN'],
  ];
  for (const [path, cert, status, code] of cases) {
    const r = await httpsCall(port, path, { cert });
    t.equal(r.status, status, `${path} ${cert ? 'with a certificate' : 'without one'}: ${code}`);
    t.equal(JSON.parse(r.body).code, code);
    t.equal(up.seen.length, 2, 'never reaches the upstream');
  }
  t.equal((await call(gw.url, '/certs/x')).json().code, 'CLIENT_CERT_REQUIRED', 'the plain listener has no certificate');

  const either = await httpsCall(port, '/either/x');
  t.equal(either.status, 401);
  t.equal(either.headers['www-authenticate'], 'ApiKey realm="gateway", header="X-API-Key"', 'challenges name the schemes HTTP has');
  t.equal((await httpsCall(port, '/either/x', { cert: billing })).status, 200, 'a certificate is a credential among others');

  const open = await httpsCall(port, '/open/x', { cert: billing, headers: spoof });
  t.equal(open.status, 200);
  t.notOk('x-client-cert-subject' in up.seen.at(-1)!.headers, 'client-sent certificate headers are stripped on every route');

  // Keep-alive: the identity of the connection is reused, and stays right.
  const agent = new Agent({ keepAlive: true, maxSockets: 1, cert: reports.cert, key: reports.key });
  t.teardown(() => agent.destroy());
  for (let i = 0; i < 3; i++) {
    t.equal((await httpsCall(port, '/certs/x', { agent })).status, 200);
    t.equal(up.seen.at(-1)!.headers['x-consumer-id'], 'reports.internal', 'each request on the connection is its certificate');
  }

  const m = (await call(gw.adminUrl, '/metrics')).body;
  t.equal(metric(m, 'gateway_auth_client_cert_total', { result: 'unverified' }), 1);
  t.equal(metric(m, 'gateway_auth_client_cert_total', { result: 'unknown_consumer' }), 1);
  t.equal(metric(m, 'gateway_auth_client_cert_total', { result: 'ok' }), 7);
});

t.test('the consumer from a SAN; any certificate of the CA when unknown consumers are allowed', async (t) => {
  const up = await startUpstream();
  const gw = await startGateway(config(up, { consumerFrom: 'san.dns', requireKnownConsumer: false }, 'require'));
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const port = tlsPort(gw.gateway);
  t.equal((await httpsCall(port, '/certs/x', { cert: reports })).status, 200);
  t.equal(up.seen.at(-1)!.headers['x-consumer-id'], 'reports.internal', 'the DNS SAN names the consumer');
  t.equal(up.seen.at(-1)!.headers['x-user-roles'], 'reader');
  t.notOk('x-client-cert-subject' in up.seen.at(-1)!.headers, 'nothing forwarded unless asked');
  t.equal((await httpsCall(port, '/certs/x', { cert: billing })).status, 200);
  t.equal(up.seen.at(-1)!.headers['x-consumer-id'], 'billing.internal', 'unknown consumers pass, with no roles');
  t.notOk('x-user-roles' in up.seen.at(-1)!.headers);
  const none = await httpsCall(port, '/certs/x', { cert: stranger });
  t.equal(none.status, 401);
  t.equal(JSON.parse(none.body).code, 'CLIENT_CERT_NO_IDENTITY', 'no DNS SAN, no identity');
});

t.test('configuration: the method needs auth.clientCert and a TLS listener that asks for certificates', async (t) => {
  const problems = (cfg: TestConfig): string[] => {
    try {
      parseConfig(withTestDefaults(cfg));
    } catch (err) {
      if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: ${p.message}`);
      throw err;
    }
    return [];
  };
  const route = { name: 'r', match: { prefix: '/' }, upstream: 'up', auth: { methods: ['clientCert'] } };
  t.same(problems({ upstreams: { up: { targets: ['http://127.0.0.1:1'] } }, routes: [route] } as TestConfig), [
    'routes[0].auth.methods: clientCert needs auth.clientCert to be configured',
    'routes[0].auth.methods: clientCert needs the TLS listener to ask for client certificates (listen.tls.clientCertificates.mode request or require)',
  ]);
  t.same(problems({ auth: { clientCert: { subjectHeader: 'X-Consumer-Id' } }, upstreams: { up: { targets: ['http://127.0.0.1:1'] } }, routes: [] } as TestConfig), [
    'auth.clientCert.subjectHeader: collides with an identity or credential header',
  ]);
});

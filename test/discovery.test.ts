import { createServer, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { parseConfig } from '../src/config/load';
import { startDnsServer, type TestDnsServer } from './helpers/dns-server';
import { startGateway, withTestDefaults, type TestGateway } from './helpers/gateway';
import { call } from './helpers/http';
import { metricValue } from './helpers/metrics';

const ADMIN_TOKEN = 'admin-token-for-discovery-tests';

/** An upstream on one loopback address (the whole of 127.0.0.0/8 is local on Linux). */
interface Backend {
  host: string;
  port: number;
  hits: number;
  /** Status of /health. */
  healthStatus: number;
  /** Delay before answering traffic. */
  delayMs: number;
  close(): Promise<void>;
}

async function backend(host: string, port = 0): Promise<Backend> {
  const sockets = new Set<Socket>();
  const b: Backend = { host, port, hits: 0, healthStatus: 200, delayMs: 0, close: async () => undefined };
  const server: Server = createServer((req, res) => {
    if (req.url === '/health') {
      res.writeHead(b.healthStatus).end();
      return;
    }
    b.hits++;
    setTimeout(() => res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ host })), b.delayMs);
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, resolve);
  });
  b.port = (server.address() as AddressInfo).port;
  b.close = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
  return b;
}

/** Backends on 127.0.0.2, .3, ... all on the same port, as pods behind a headless Service are. */
async function backends(t: { teardown(fn: () => Promise<void>): void }, count: number): Promise<Backend[]> {
  const first = await backend('127.0.0.2');
  const all = [first];
  for (let i = 1; i < count; i++) all.push(await backend(`127.0.0.${i + 2}`, first.port));
  t.teardown(async () => {
    for (const b of all) await b.close();
  });
  return all;
}

async function dnsServer(t: { teardown(fn: () => Promise<void>): void }): Promise<TestDnsServer> {
  const dns = await startDnsServer();
  t.teardown(() => dns.close());
  return dns;
}

async function gateway(t: { teardown(fn: () => Promise<void>): void }, upstream: Record<string, unknown>): Promise<TestGateway> {
  const gw = await startGateway({
    admin: { token: ADMIN_TOKEN },
    log: { level: 'info', access: false },
    upstreams: { svc: { retries: { maxRetries: 0 }, ...upstream } },
    routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'svc' }],
  });
  t.teardown(() => gw.close());
  return gw;
}

interface TargetView {
  url: string;
  source: string;
  weight: number;
  healthy: boolean;
}

async function targets(gw: TestGateway): Promise<TargetView[]> {
  const res = await call(gw.adminUrl, '/admin/upstreams', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } });
  return res.json<{ upstreams: { targets: TargetView[] }[] }>().upstreams[0].targets;
}

async function waitFor(t: { fail(msg: string): void }, what: string, cond: () => boolean | Promise<boolean>, ms = 8000): Promise<void> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (await cond()) return;
    await sleep(25);
  }
  t.fail(`timed out waiting for ${what}`);
}

async function hosts(gw: TestGateway, n: number): Promise<string[]> {
  const out: string[] = [];
  for (let i = 0; i < n; i++) {
    const res = await call(gw.url, `/r${i}`);
    out.push(res.status === 200 ? res.json<{ host: string }>().host : String(res.status));
  }
  return out;
}

const FAST = { minTtlMs: 200, maxTtlMs: 1000 };

t.test('dns: every address is a target; new addresses join, removed ones drain and leave', async (t) => {
  const [b2, b3] = await backends(t, 2);
  const dns = await dnsServer(t);
  dns.zones.set('api.svc.test', { a: ['127.0.0.2'], ttl: 0 });
  const gw = await gateway(t, { targets: [`http://api.svc.test:${b2.port}`], discovery: { type: 'dns', servers: [dns.address], ...FAST } });

  // Resolved before the listener opened: the first request already has a target.
  t.same(await hosts(gw, 3), ['127.0.0.2', '127.0.0.2', '127.0.0.2']);
  t.match(await targets(gw), [{ url: `http://127.0.0.2:${b2.port}`, source: 'dns', weight: 1 }]);
  t.equal(await metricValue(gw.adminUrl, 'gateway_upstream_targets', { upstream: 'svc', source: 'dns' }), 1);
  const view = (await call(gw.adminUrl, '/admin/upstreams', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json<{ upstreams: Record<string, unknown>[] }>().upstreams[0];
  t.match(view, { discovery: 'dns', targetsByOrigin: { static: 0, dns: 1 } }, 'the admin view counts targets by origin');

  dns.zones.set('api.svc.test', { a: ['127.0.0.2', '127.0.0.3'], ttl: 0 });
  await waitFor(t, 'the second address', async () => (await targets(gw)).length === 2);
  t.same((await hosts(gw, 4)).sort(), ['127.0.0.2', '127.0.0.2', '127.0.0.3', '127.0.0.3'], 'both addresses take traffic');
  t.ok(gw.logs.some((l) => l.msg === 'upstream targets changed by discovery' && (l.added as string[]).includes(`http://127.0.0.3:${b2.port}`)));

  // A slow request in flight on .2 when .2 disappears from DNS still finishes (round-robin sends
  // one of two requests to each address).
  b2.delayMs = 1500;
  const before = b2.hits;
  const inFlight = [call(gw.url, '/slow1'), call(gw.url, '/slow2')];
  await waitFor(t, 'a request in flight on .2', () => b2.hits > before);
  dns.zones.set('api.svc.test', { a: ['127.0.0.3'], ttl: 0 });
  await waitFor(t, '.2 removed', async () => (await targets(gw)).length === 1);
  const b3Before = b3.hits;
  t.same(await hosts(gw, 3), ['127.0.0.3', '127.0.0.3', '127.0.0.3'], 'only the remaining address gets new requests');
  t.equal(b3.hits - b3Before, 3);
  t.same((await Promise.all(inFlight)).map((r) => r.status), [200, 200], 'the request in flight on the removed address finished');
  t.equal(await metricValue(gw.adminUrl, 'gateway_upstream_in_flight_requests', { target: `http://127.0.0.2:${b2.port}` }), 0, 'the removed target left the metrics');
});

t.test('dns: a failing DNS keeps the last good targets and counts the failures', async (t) => {
  const [b2] = await backends(t, 1);
  const dns = await dnsServer(t);
  dns.zones.set('api.svc.test', { a: ['127.0.0.2'], ttl: 0 });
  const gw = await gateway(t, { targets: [`http://api.svc.test:${b2.port}`], discovery: { type: 'dns', servers: [dns.address], ...FAST } });
  t.same(await hosts(gw, 1), ['127.0.0.2']);
  dns.failing = true;
  await waitFor(t, 'a failure counted', async () => (await metricValue(gw.adminUrl, 'gateway_upstream_discovery_failures_total', { upstream: 'svc', reason: 'error' })) >= 2);
  t.same(await hosts(gw, 3), ['127.0.0.2', '127.0.0.2', '127.0.0.2'], 'still served by the last known address');
  t.ok(gw.logs.some((l) => l.msg === 'DNS resolution failed; keeping the last known targets' && l.host === 'api.svc.test'));
  dns.failing = false;
  dns.zones.set('api.svc.test', { a: ['127.0.0.3'], ttl: 0 });
  const b3 = await backend('127.0.0.3', b2.port);
  t.teardown(() => b3.close());
  await waitFor(t, 'DNS back', async () => (await targets(gw))[0]?.url === `http://127.0.0.3:${b2.port}`);
  t.same(await hosts(gw, 1), ['127.0.0.3']);
  t.equal(b3.hits, 1);
});

t.test('dns: an empty answer keeps the last targets for emptyKeepMs, then they go', async (t) => {
  const [b2] = await backends(t, 1);
  const dns = await dnsServer(t);
  dns.zones.set('api.svc.test', { a: ['127.0.0.2'], ttl: 0 });
  const gw = await gateway(t, {
    targets: [`http://api.svc.test:${b2.port}`],
    discovery: { type: 'dns', servers: [dns.address], ...FAST, emptyKeepMs: 1500 },
  });
  t.same(await hosts(gw, 1), ['127.0.0.2']);
  const emptied = Date.now();
  dns.zones.set('api.svc.test', { a: [], ttl: 0 });
  await waitFor(t, 'an empty answer seen', async () => (await metricValue(gw.adminUrl, 'gateway_upstream_discovery_failures_total', { reason: 'empty' })) >= 1);
  t.same(await hosts(gw, 2), ['127.0.0.2', '127.0.0.2'], 'kept within emptyKeepMs');
  // NXDOMAIN (the name is gone) counts as empty too, not as a DNS failure.
  dns.zones.delete('api.svc.test');
  await waitFor(t, 'the targets dropped', async () => (await targets(gw)).length === 0, 5000);
  t.ok(Date.now() - emptied >= 1500, 'not before emptyKeepMs');
  const res = await call(gw.url, '/gone');
  t.equal(res.status, 503, 'no target: 503');
  t.equal(res.headers['retry-after'], '1');
  // The name coming back brings the target back.
  dns.zones.set('api.svc.test', { a: ['127.0.0.2'], ttl: 0 });
  await waitFor(t, 'the target back', async () => (await targets(gw)).length === 1);
  t.same(await hosts(gw, 1), ['127.0.0.2']);
});

t.test('srv: every record is a target on its own port, with its weight', async (t) => {
  const a = await backend('127.0.0.2');
  const b = await backend('127.0.0.3');
  t.teardown(async () => {
    await a.close();
    await b.close();
  });
  const dns = await dnsServer(t);
  dns.zones.set('_http._tcp.api.svc.test', {
    srv: [
      { target: '127.0.0.2', port: a.port, weight: 3 },
      { target: '127.0.0.3', port: b.port, weight: 1 },
      { target: '127.0.0.4', port: 1, weight: 5, priority: 10 },
    ],
    ttl: 0,
  });
  const gw = await gateway(t, { targets: ['http://_http._tcp.api.svc.test/base'], discovery: { type: 'srv', servers: [dns.address], ...FAST } });
  t.same(
    (await targets(gw)).map((v) => [v.url, v.weight]),
    [
      [`http://127.0.0.2:${a.port}/base`, 3],
      [`http://127.0.0.3:${b.port}/base`, 1],
    ],
    'the lower-priority record is left out',
  );
  const seen = await hosts(gw, 40);
  t.equal(seen.filter((h) => h === '127.0.0.2').length, 30, 'weights 3:1');
  t.equal(seen.filter((h) => h === '127.0.0.3').length, 10);
});

t.test('dns with active health checks: a new address takes traffic only once its probes pass', async (t) => {
  const [b2, b3] = await backends(t, 2);
  b3.healthStatus = 500;
  const dns = await dnsServer(t);
  dns.zones.set('api.svc.test', { a: ['127.0.0.2'], ttl: 0 });
  const gw = await gateway(t, {
    targets: [`http://api.svc.test:${b2.port}`],
    discovery: { type: 'dns', servers: [dns.address], ...FAST },
    healthCheck: { enabled: true, intervalMs: 100, timeoutMs: 1000, healthyThreshold: 2, unhealthyThreshold: 2 },
  });
  dns.zones.set('api.svc.test', { a: ['127.0.0.2', '127.0.0.3'], ttl: 0 });
  await waitFor(t, 'the second address', async () => (await targets(gw)).length === 2);
  t.match(await targets(gw), [{ healthy: true }, { healthy: false }], 'the newcomer waits for its probes');
  await sleep(400);
  t.same(await hosts(gw, 4), ['127.0.0.2', '127.0.0.2', '127.0.0.2', '127.0.0.2'], 'no traffic while its probes fail');
  b3.healthStatus = 200;
  await waitFor(t, 'the newcomer healthy', async () => (await targets(gw))[1].healthy);
  t.ok((await hosts(gw, 4)).includes('127.0.0.3'), 'in the rotation once healthy');
});

t.test('a reload that adds a DNS upstream resolves it before the first request', async (t) => {
  const [b2] = await backends(t, 1);
  const dns = await dnsServer(t);
  dns.zones.set('api.svc.test', { a: ['127.0.0.2'], ttl: 0 });
  const gw = await gateway(t, { targets: [`http://127.0.0.2:${b2.port}`] });
  await gw.gateway.reload(
    parseConfig(
      withTestDefaults({
        admin: { token: ADMIN_TOKEN },
        upstreams: { svc: { targets: [`http://api.svc.test:${b2.port}`], discovery: { type: 'dns', servers: [dns.address], ...FAST } } },
        routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'svc' }],
      }),
    ),
  );
  t.same(await hosts(gw, 2), ['127.0.0.2', '127.0.0.2']);
  t.match(await targets(gw), [{ source: 'dns' }]);
});

t.test('config: discovery servers and SRV ports are checked', async (t) => {
  const problems = (up: Record<string, unknown>) => {
    try {
      parseConfig(withTestDefaults({ upstreams: { a: up }, routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'a' }] }));
      return [];
    } catch (err) {
      return (err as { problems: { path: string; message: string }[] }).problems.map((p) => `${p.path}: ${p.message}`);
    }
  };
  t.same(problems({ targets: ['http://a.test:80'], discovery: { type: 'dns', servers: ['10.0.0.1', '10.0.0.2:5353', '[::1]:53'] } }), []);
  t.same(problems({ targets: ['http://a.test'], discovery: { type: 'dns', servers: ['dns.example:53'] } }), [
    'upstreams.a.discovery.servers[0]: "dns.example:53" is not an IP address with an optional port (1.2.3.4, 1.2.3.4:53, [::1]:53)',
  ]);
  t.same(problems({ targets: ['http://_http._tcp.a.test:8080'], discovery: { type: 'srv' } }), [
    'upstreams.a.targets[0]: with discovery.type srv the port comes from the SRV records: leave it out of the URL',
  ]);
  t.same(problems({ targets: ['http://a.test'], discovery: { type: 'dns', minTtlMs: 5000, maxTtlMs: 1000 } }), [
    'upstreams.a.discovery.maxTtlMs: must be at least discovery.minTtlMs (5000)',
  ]);
});

import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import t from 'tap';
import { WebSocket, WebSocketServer } from 'ws';
import { ConfigError, parseConfig } from '../src/config/load';
import { restartOnlyChanges } from '../src/lifecycle/reload';
import { startCacheUpstream } from './helpers/cache';
import { startFlakyUpstream } from './helpers/flaky-upstream';
import { startGateway, withTestDefaults, type TestConfig, type TestGateway } from './helpers/gateway';
import { call } from './helpers/http';
import { metricValue } from './helpers/metrics';
import { SPAN_KIND, STATUS_CODE, startOtlpReceiver, type OtlpReceiver, type ReceivedSpan } from './helpers/otlp';
import { startUpstream, type TestUpstream } from './helpers/upstream';

const TRACE_ID = '0af7651916cd43dd8448eb211c80319c';
const PARENT_ID = 'b7ad6b7169203331';
const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-(0[01])$/;

/** Export without waiting: a batch leaves as soon as it holds a span, or within 20 ms. */
const FAST_EXPORT = { scheduledDelayMs: 20, maxExportBatchSize: 1, timeoutMs: 2000 };

async function setup(
  t: { teardown(fn: () => Promise<void>): void },
  tracing: Record<string, unknown>,
  extra: TestConfig = {},
): Promise<{ gw: TestGateway; up: TestUpstream; otlp: OtlpReceiver }> {
  const otlp = await startOtlpReceiver();
  const up = await startUpstream();
  const gw = await startGateway(
    {
      upstreams: { svc: { targets: [up.url] } },
      routes: [{ name: 'users', match: { prefix: '/users' }, upstream: 'svc' }],
      tracing: { enabled: true, endpoint: otlp.url, export: FAST_EXPORT, ...tracing },
      ...extra,
    },
    { COLLECTOR_KEY: 'k-123' },
  );
  t.teardown(async () => {
    await gw.close();
    await up.close();
    await otlp.close();
  });
  return { gw, up, otlp };
}

const accessLines = (gw: TestGateway) => {
  gw.gateway.flushLogs();
  return gw.logs.filter((l) => l.msg === 'request completed');
};

const byKind = (spans: ReceivedSpan[], kind: number) => spans.filter((s) => s.kind === kind);

t.test('an incoming traceparent is continued: server span, client span, and the upstream sees the client span as parent', async (t) => {
  const { gw, up, otlp } = await setup(t, {
    headers: { 'x-collector-key': '${COLLECTOR_KEY}' },
    serviceName: 'edge',
    resourceAttributes: { 'deployment.environment.name': 'test' },
  });
  const res = await call(gw.url, '/users/42?x=1', {
    headers: { traceparent: `00-${TRACE_ID}-${PARENT_ID}-01`, tracestate: 'vendor=abc', 'x-request-id': 'req-1', 'user-agent': 'tap-test' },
  });
  t.equal(res.status, 200);
  t.equal(res.headers['x-request-id'], 'req-1', 'X-Request-Id stays as it was');
  const spans = await otlp.waitForSpans(2);
  const [server] = byKind(spans, SPAN_KIND.SERVER);
  const [client] = byKind(spans, SPAN_KIND.CLIENT);
  t.ok(server && client, 'one server and one client span');

  t.equal(server.traceId, TRACE_ID, 'the trace goes on');
  t.equal(server.parentSpanId, PARENT_ID, "the server span's parent is the caller's span");
  t.equal(server.name, 'users', 'named after the route');
  t.match(server.attributes, {
    'http.request.method': 'GET',
    'url.path': '/users/42',
    'url.scheme': 'http',
    'http.route': '/users',
    'http.response.status_code': 200,
    'server.address': '127.0.0.1',
    'client.address': '127.0.0.1',
    'network.protocol.version': '1.1',
    'user_agent.original': 'tap-test',
    'gateway.route': 'users',
    'gateway.request.id': 'req-1',
  });
  t.equal(server.status.code, STATUS_CODE.UNSET);
  t.ok(server.endNs > server.startNs);

  t.equal(client.traceId, TRACE_ID);
  t.equal(client.parentSpanId, server.spanId, 'the client span is a child of the server span');
  t.equal(client.name, 'GET');
  t.match(client.attributes, { 'server.address': '127.0.0.1', 'server.port': up.port, 'http.response.status_code': 200, 'gateway.upstream': 'svc' });
  t.notOk('http.request.resend_count' in client.attributes, 'a first attempt is no resend');
  t.ok(client.startNs >= server.startNs && client.endNs <= server.endNs, 'the attempt lies within the request');

  const sent = up.seen[0].headers;
  const m = TRACEPARENT.exec(String(sent.traceparent));
  t.ok(m, `a valid traceparent upstream (${String(sent.traceparent)})`);
  t.equal(m?.[1], TRACE_ID, 'same trace upstream');
  t.equal(m?.[2], client.spanId, "the upstream's parent is the client span");
  t.equal(m?.[3], '01', 'sampled');
  t.equal(sent.tracestate, 'vendor=abc', 'tracestate travels on');
  t.equal(server.traceState, 'vendor=abc', "the caller's tracestate is the spans' too");
  t.equal(client.traceState, 'vendor=abc');
  t.equal(up.seen[0].rawHeaders.filter((h) => h.toLowerCase() === 'traceparent').length, 1, "the client's own traceparent is replaced, not repeated");

  t.equal(server.resource['service.name'], 'edge');
  t.equal(server.resource['deployment.environment.name'], 'test');
  t.equal(otlp.requests[0].contentType, 'application/x-protobuf');
  t.equal(otlp.requests[0].headers['x-collector-key'], 'k-123', 'export headers, ${ENV} substituted');

  const [line] = accessLines(gw);
  t.equal(line.traceId, TRACE_ID, 'the access line carries the trace id');
  t.equal(line.reqId, 'req-1');
});

t.test('without a traceparent a new trace starts; a 5xx marks the server span as an error', async (t) => {
  const up = await startUpstream((_req, res) => {
    res.writeHead(500).end('boom');
  });
  t.teardown(() => up.close());
  const { gw, otlp } = await setup(t, {}, { upstreams: { svc: { targets: [up.url] } } });
  const res = await call(gw.url, '/users');
  t.equal(res.status, 500);
  const spans = await otlp.waitForSpans(2);
  const [server] = byKind(spans, SPAN_KIND.SERVER);
  const [client] = byKind(spans, SPAN_KIND.CLIENT);
  t.equal(server.parentSpanId, '', 'a root span');
  t.match(server.traceId, /^[0-9a-f]{32}$/);
  t.not(server.traceId, '0'.repeat(32));
  t.equal(server.status.code, STATUS_CODE.ERROR);
  t.equal(server.attributes['error.type'], '500');
  t.equal(client.status.code, STATUS_CODE.ERROR);
  t.equal(client.attributes['http.response.status_code'], 500);
  t.equal(accessLines(gw)[0].traceId, server.traceId);
});

t.test('each retry is a client span of its own, and the upstream that answers sees its own attempt as parent', async (t) => {
  const otlp = await startOtlpReceiver();
  const a = await startFlakyUpstream();
  const b = await startFlakyUpstream();
  a.behave({ kind: 'status', status: 503 });
  const gw = await startGateway({
    upstreams: { svc: { targets: [a.url, b.url], breaker: { enabled: false }, retries: { budgetRatio: 1 } } },
    routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'svc' }],
    tracing: { enabled: true, endpoint: otlp.url, export: FAST_EXPORT },
  });
  t.teardown(async () => {
    await gw.close();
    await a.close();
    await b.close();
    await otlp.close();
  });
  // Round robin starts on a: the first request fails there and is retried on b.
  t.equal((await call(gw.url, '/x')).status, 200);
  t.equal(a.hits, 1);
  const spans = await otlp.waitForSpans(3);
  const [server] = byKind(spans, SPAN_KIND.SERVER);
  const clients = byKind(spans, SPAN_KIND.CLIENT).sort((x, y) => Number(x.startNs - y.startNs));
  t.equal(clients.length, 2, 'two attempts, two client spans');
  for (const c of clients) t.equal(c.parentSpanId, server.spanId, 'both under the server span');
  const [first, second] = clients;
  t.equal(first.attributes['server.port'], a.port);
  t.equal(first.attributes['http.response.status_code'], 503);
  t.equal(first.status.code, STATUS_CODE.ERROR, 'the failed attempt is an error');
  t.equal(second.attributes['server.port'], b.port);
  t.equal(second.attributes['http.response.status_code'], 200);
  t.equal(second.attributes['http.request.resend_count'], 1, 'the retry says it is one');
  t.equal(second.status.code, STATUS_CODE.UNSET);
  t.equal(server.status.code, STATUS_CODE.UNSET, 'the request itself succeeded');
  t.equal(TRACEPARENT.exec(String(a.seen[0].headers.traceparent))?.[2], first.spanId);
  t.equal(TRACEPARENT.exec(String(b.seen[0].headers.traceparent))?.[2], second.spanId);
});

t.test('a refused connection is an attempt span with its error', async (t) => {
  const otlp = await startOtlpReceiver();
  const a = await startFlakyUpstream();
  await a.stop();
  const gw = await startGateway({
    upstreams: { svc: { targets: [a.url], breaker: { enabled: false }, retries: { maxRetries: 0 } } },
    routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'svc' }],
    tracing: { enabled: true, endpoint: otlp.url, export: FAST_EXPORT },
    log: { level: 'error' },
  });
  t.teardown(async () => {
    await gw.close();
    await a.close();
    await otlp.close();
  });
  t.equal((await call(gw.url, '/x')).status, 502);
  const spans = await otlp.waitForSpans(2);
  const [server] = byKind(spans, SPAN_KIND.SERVER);
  const [client] = byKind(spans, SPAN_KIND.CLIENT);
  t.equal(client.status.code, STATUS_CODE.ERROR);
  t.match(client.attributes['error.type'], /^UPSTREAM_/);
  t.notOk('http.response.status_code' in client.attributes, 'nothing was answered');
  t.equal(server.attributes['http.response.status_code'], 502);
  t.equal(server.status.code, STATUS_CODE.ERROR);
  t.equal(server.attributes['error.type'], server.attributes['gateway.error.code']);
});

t.test('the consumer, the rate-limit decision and the cache result are on the server span', async (t) => {
  const otlp = await startOtlpReceiver();
  const up = await startCacheUpstream();
  const gw = await startGateway(
    {
      upstreams: { up: { targets: [up.url] } },
      routes: [{ name: 'c', match: { prefix: '/c' }, upstream: 'up', cache: {}, rateLimit: { limits: [{ rate: 2, per: '1h', by: 'consumer' }] } }],
      tracing: { enabled: true, endpoint: otlp.url, export: FAST_EXPORT },
    } as TestConfig,
    {},
    {
      plugins: () => [
        {
          name: 'who',
          stepFor: () => ({
            name: 'who',
            run: (ctx) => {
              ctx.identity = { consumerId: 'alice', roles: [], scopes: [], method: 'apiKey' };
              return true;
            },
          }),
        },
      ],
    },
  );
  t.teardown(async () => {
    await gw.close();
    await up.close();
    await otlp.close();
  });
  t.equal((await call(gw.url, '/c/x?cc=max-age=60')).headers['x-cache'], 'MISS');
  t.equal((await call(gw.url, '/c/x?cc=max-age=60')).headers['x-cache'], 'HIT');
  t.equal((await call(gw.url, '/c/x?cc=max-age=60')).status, 429);
  await otlp.waitForSpans(4);
  const servers = byKind(otlp.spans, SPAN_KIND.SERVER).sort((x, y) => Number(x.startNs - y.startNs));
  t.same(
    servers.map((s) => [s.attributes['enduser.id'], s.attributes['gateway.rate_limit.decision'], s.attributes['gateway.cache.result'], s.attributes['http.response.status_code']]),
    [
      ['alice', 'allowed', 'miss', 200],
      ['alice', 'allowed', 'hit', 200],
      ['alice', 'limited', undefined, 429],
    ],
  );
  t.equal(servers[2].attributes['gateway.error.code'], 'RATE_LIMITED');
  t.equal(servers[2].status.code, STATUS_CODE.UNSET, "a 429 is the client's, not an error of the gateway");
  t.equal(byKind(otlp.spans, SPAN_KIND.CLIENT).length, 1, 'only the miss went upstream');
});

t.test('sampling: ratio 0 exports nothing but still propagates; a route may override the ratio; a sampled caller is followed', async (t) => {
  const { gw, up, otlp } = await setup(
    t,
    { sampleRatio: 0 },
    {
      routes: [
        { name: 'users', match: { prefix: '/users' }, upstream: 'svc' },
        { name: 'orders', match: { prefix: '/orders' }, upstream: 'svc', tracing: { sampleRatio: 1 } },
      ],
    },
  );
  for (let i = 0; i < 5; i++) t.equal((await call(gw.url, '/users')).status, 200);
  const unsampled = up.seen.map((s) => TRACEPARENT.exec(String(s.headers.traceparent)));
  t.ok(unsampled.every((m) => m !== null && m[3] === '00'), 'every request carried an unsampled traceparent upstream');
  t.equal(new Set(unsampled.map((m) => m?.[1])).size, 5, 'each a trace of its own');
  t.same(
    accessLines(gw).map((l) => l.traceId),
    unsampled.map((m) => m?.[1]),
    'the access lines name those traces',
  );

  t.equal((await call(gw.url, '/orders')).status, 200, 'the route with ratio 1');
  t.equal((await call(gw.url, '/users', { headers: { traceparent: `00-${TRACE_ID}-${PARENT_ID}-01` } })).status, 200, 'a sampled caller');
  t.equal((await call(gw.url, '/orders', { headers: { traceparent: `00-${'1'.repeat(32)}-${PARENT_ID}-00` } })).status, 200, 'an unsampled caller');
  await gw.close();
  t.equal(byKind(otlp.spans, SPAN_KIND.SERVER).length, 2, 'only two requests were recorded (flushed on close)');
  const names = byKind(otlp.spans, SPAN_KIND.SERVER).map((s) => `${s.name}:${s.parentSpanId === '' ? 'root' : s.traceId}`);
  t.same(names.sort(), ['orders:root', `users:${TRACE_ID}`]);
  t.equal(TRACEPARENT.exec(String(up.seen[7].headers.traceparent))?.[1], '1'.repeat(32), "an unsampled caller's trace goes on unrecorded");
  t.equal(TRACEPARENT.exec(String(up.seen[7].headers.traceparent))?.[3], '00');
});

t.test('an unsampled request gets no span but a correct trace context upstream', async (t) => {
  const { gw, up, otlp } = await setup(t, { sampleRatio: 0 });
  const incoming = `00-${TRACE_ID}-${PARENT_ID}-00`;
  t.equal((await call(gw.url, '/users/1', { headers: { traceparent: incoming, tracestate: 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7' } })).status, 200);
  const first = TRACEPARENT.exec(String(up.seen[0].headers.traceparent));
  t.equal(first?.[1], TRACE_ID, 'the trace goes on');
  t.not(first?.[2], PARENT_ID, 'under a parent id of the gateway');
  t.not(first?.[2], '0'.repeat(16));
  t.equal(first?.[3], '00', 'not sampled');
  t.equal(up.seen[0].headers.tracestate, 'congo=t61rcWkgMzE,rojo=00f067aa0ba902b7', 'tracestate travels on');
  t.equal(up.seen[0].rawHeaders.filter((h) => h.toLowerCase() === 'traceparent').length, 1, 'one traceparent');

  // Invalid traceparents start a new trace, and their tracestate is dropped (W3C §3.3).
  const invalid = [
    `00-${TRACE_ID.toUpperCase()}-${PARENT_ID}-01`,
    `ff-${TRACE_ID}-${PARENT_ID}-01`,
    `00-${'0'.repeat(32)}-${PARENT_ID}-01`,
    `00-${TRACE_ID}-${'0'.repeat(16)}-01`,
    `00-${TRACE_ID}-${PARENT_ID}-01-extra`,
    `00-${TRACE_ID}-${PARENT_ID}-0g`,
    `00-${TRACE_ID.slice(1)}-${PARENT_ID}-01`,
  ];
  for (const tp of invalid) t.equal((await call(gw.url, '/users/1', { headers: { traceparent: tp, tracestate: 'a=b' } })).status, 200, tp);
  for (let i = 1; i <= invalid.length; i++) {
    const m = TRACEPARENT.exec(String(up.seen[i].headers.traceparent));
    t.ok(m !== null && m[1] !== TRACE_ID && m[1] !== '0'.repeat(32) && m[3] === '00', `${invalid[i - 1]}: a new unsampled trace (${String(up.seen[i].headers.traceparent)})`);
    t.notOk('tracestate' in up.seen[i].headers, 'no tracestate without a valid traceparent');
  }
  // A later version may add fields: its trace goes on, sent on as version 00.
  t.equal((await call(gw.url, '/users/1', { headers: { traceparent: `cc-${TRACE_ID}-${PARENT_ID}-00-what-comes-later` } })).status, 200);
  t.equal(TRACEPARENT.exec(String(up.seen[invalid.length + 1].headers.traceparent))?.[1], TRACE_ID);
  t.same(
    accessLines(gw).map((l) => l.traceId),
    up.seen.map((s) => TRACEPARENT.exec(String(s.headers.traceparent))?.[1]),
    'each access line names the trace its upstream request carried',
  );
  await gw.close();
  t.equal(otlp.spans.length, 0, 'nothing was recorded');
});

t.test('at a ratio, sampled and unsampled requests alike carry their own trace id upstream and in the access line', async (t) => {
  const { gw, up, otlp } = await setup(t, { sampleRatio: 0.5 });
  const n = 40;
  for (let i = 0; i < n; i++) t.equal((await call(gw.url, `/users/${i}`)).status, 200);
  await gw.close();
  const upstream = up.seen.map((s) => TRACEPARENT.exec(String(s.headers.traceparent))!);
  const sampled = upstream.filter((m) => m[3] === '01');
  t.ok(sampled.length > 0 && sampled.length < n, `both kinds occur at 0.5 (${sampled.length} of ${n} sampled)`);
  t.equal(new Set(upstream.map((m) => m[1])).size, n, 'a trace each');
  const servers = byKind(otlp.spans, SPAN_KIND.SERVER);
  t.same(servers.map((s) => s.traceId).sort(), sampled.map((m) => m[1]).sort(), 'exactly the sampled requests were recorded, with the trace id the upstream saw');
  const clients = new Map(byKind(otlp.spans, SPAN_KIND.CLIENT).map((c) => [c.spanId, c]));
  for (const m of sampled) t.equal(clients.get(m[2])?.traceId, m[1], 'the upstream of a sampled request has its client span as parent');
  t.same(accessLines(gw).map((l) => l.traceId), upstream.map((m) => m[1]), 'the access lines name those traces');
});

t.test('traceparentFlags follows W3C Trace Context', async (t) => {
  const { traceparentFlags } = await import('../src/observability/tracing');
  t.equal(traceparentFlags(`00-${TRACE_ID}-${PARENT_ID}-01`), 1);
  t.equal(traceparentFlags(`00-${TRACE_ID}-${PARENT_ID}-00`), 0);
  t.equal(traceparentFlags(`00-${TRACE_ID}-${PARENT_ID}-03`), 3);
  t.equal(traceparentFlags(`01-${TRACE_ID}-${PARENT_ID}-01-future`), 1, 'a later version with more fields');
  t.equal(traceparentFlags(`01-${TRACE_ID}-${PARENT_ID}-01`), 1, 'a later version without');
  t.equal(traceparentFlags(`01-${TRACE_ID}-${PARENT_ID}-01x`), -1, 'more fields follow a dash');
  t.equal(traceparentFlags(`00-${TRACE_ID}-${PARENT_ID}-01-`), -1, 'version 00 has exactly four fields');
  t.equal(traceparentFlags(`ff-${TRACE_ID}-${PARENT_ID}-01`), -1);
  t.equal(traceparentFlags(`00-${TRACE_ID}-${PARENT_ID.toUpperCase()}-01`), -1, 'lowercase only');
  t.equal(traceparentFlags(`00-${TRACE_ID}_${PARENT_ID}-01`), -1);
  t.equal(traceparentFlags(`00-${TRACE_ID}-${PARENT_ID}-01, 00-${TRACE_ID}-${PARENT_ID}-01`), -1, 'two joined');
  t.equal(traceparentFlags(''), -1);
});

t.test('TraceIds: well-formed, distinct ids across refills; the traceparent of a new trace names it', async (t) => {
  const { TraceIds, traceparentFlags } = await import('../src/observability/tracing');
  const ids = new TraceIds();
  const seen = new Set<string>();
  // Several refills' worth (170 records each), spans and traces interleaved as the SDK takes them.
  for (let i = 0; i < 1000; i++) {
    const trace = ids.newTraceId();
    const tp = ids.lastTraceparent();
    const span = ids.newSpanId();
    if (!/^[0-9a-f]{32}$/.test(trace) || !/^[0-9a-f]{16}$/.test(span) || /^0+$/.test(trace) || /^0+$/.test(span)) return t.fail(`bad ids ${trace} ${span}`);
    if (tp !== `00-${trace}-${tp.slice(36, 52)}-00` || traceparentFlags(tp) !== 0 || /^0+$/.test(tp.slice(36, 52))) return t.fail(`bad traceparent ${tp} for ${trace}`);
    if (ids.word !== Number.parseInt(trace.slice(24), 16)) return t.fail('the sampling word is the last 32 bits of the trace id');
    for (const id of [trace, span, tp.slice(36, 52)]) seen.add(id);
  }
  t.equal(seen.size, 3000, 'no id came twice');
  t.equal(ids.generateSpanId().length, 16, 'the SDK gets span ids from the same records');
  ids.next = 'f'.repeat(32);
  t.equal(ids.generateTraceId(), 'f'.repeat(32), 'a root span the step sampled gets the trace id it was sampled on');
  t.equal(ids.generateTraceId().length, 32, 'once');
});

/** Prometheus 3's Accept header for a scrape. */
const PROMETHEUS_ACCEPT =
  'application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,application/openmetrics-text;version=0.0.1;q=0.5,text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2';

t.test('latency histograms carry the trace of a sampled request as exemplar when scraped as OpenMetrics', async (t) => {
  const { gw } = await setup(t, { sampleRatio: 0 });
  t.equal((await call(gw.url, '/users/1')).status, 200, 'an unsampled request');
  const noExemplar = await call(gw.adminUrl, '/metrics', { headers: { accept: PROMETHEUS_ACCEPT } });
  t.notMatch(noExemplar.body, /# \{trace_id=/, 'an unsampled request is no exemplar');
  t.equal((await call(gw.url, '/users/2', { headers: { traceparent: `00-${TRACE_ID}-${PARENT_ID}-01` } })).status, 200, 'a sampled one');

  const om = await call(gw.adminUrl, '/metrics', { headers: { accept: PROMETHEUS_ACCEPT } });
  t.equal(om.headers['content-type'], 'application/openmetrics-text; version=1.0.0; charset=utf-8');
  t.match(om.headers.vary, /accept/i);
  t.ok(om.body.endsWith('# EOF\n'), 'OpenMetrics ends with # EOF');
  for (const family of ['gateway_request_duration_seconds', 'gateway_upstream_duration_seconds', 'gateway_added_duration_seconds']) {
    const lines = om.body.split('\n').filter((l) => l.startsWith(`${family}_bucket{route="users",`) && l.includes(' # {'));
    t.equal(lines.length, 1, `${family}: one bucket holds the exemplar`);
    const m = /^\S+\{route="users",le="([^"]+)"\} (\d+) # \{trace_id="([0-9a-f]{32})"\} (\S+) (\d+(?:\.\d+)?)$/.exec(lines[0] ?? '');
    t.ok(m, `an OpenMetrics exemplar: ${lines[0]}`);
    if (m === null) continue;
    t.equal(m[3], TRACE_ID, 'of the sampled trace');
    const [le, value, ts] = [Number(m[1]), Number(m[4]), Number(m[5])];
    t.ok(value >= 0 && value <= le, `its value ${value} lies in its bucket (le ${le})`);
    t.ok(Math.abs(ts - Date.now() / 1000) < 60, 'timestamped in seconds');
  }
  t.match(om.body, /\n# TYPE gateway_requests counter\ngateway_requests_total\{/, 'counters are named as OpenMetrics wants');

  const text = await call(gw.adminUrl, '/metrics');
  t.match(text.headers['content-type'], /^text\/plain; version=0\.0\.4/);
  t.notMatch(text.body, /# \{/, 'no exemplars in the Prometheus text format');
  t.notMatch(text.body, /# EOF/);
  t.match(text.body, /\n# TYPE gateway_requests_total counter\n/, 'the text format keeps its names after an OpenMetrics scrape');
  t.equal((await call(gw.adminUrl, '/metrics', { headers: { accept: 'text/plain;q=0.9, application/openmetrics-text;q=0.5' } })).headers['content-type'], text.headers['content-type'], 'text preferred by weight');
  t.equal((await call(gw.adminUrl, '/metrics', { headers: { accept: 'application/openmetrics-text;q=0' } })).headers['content-type'], text.headers['content-type'], 'q=0 refuses');
});

t.test('a WebSocket upgrade is traced like a request: the upstream gets the trace context, sampled or not', async (t) => {
  const seen: IncomingHttpHeaders[] = [];
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise((r) => wss.once('listening', r));
  wss.on('connection', (ws, req) => {
    seen.push(req.headers);
    ws.on('message', (d) => ws.send(d));
  });
  t.teardown(() => new Promise<void>((r) => wss.close(() => r())));
  const { gw, otlp } = await setup(t, { sampleRatio: 0 }, { upstreams: { svc: { targets: [`http://127.0.0.1:${(wss.address() as AddressInfo).port}`] } } });
  const roundTrip = async (traceparent: string) => {
    const ws = new WebSocket(`${gw.url.replace('http', 'ws')}/users/ws`, { headers: { traceparent } });
    await new Promise((r, j) => ws.once('open', r).once('error', j));
    ws.send('hi');
    await new Promise((r) => ws.once('message', r));
    ws.close();
    await new Promise((r) => ws.once('close', r));
  };
  await roundTrip(`00-${TRACE_ID}-${PARENT_ID}-01`);
  await roundTrip(`00-${'2'.repeat(32)}-${PARENT_ID}-00`);
  const sampled = TRACEPARENT.exec(String(seen[0].traceparent));
  const unsampled = TRACEPARENT.exec(String(seen[1].traceparent));
  t.equal(sampled?.[1], TRACE_ID);
  t.equal(sampled?.[3], '01');
  t.equal(unsampled?.[1], '2'.repeat(32));
  t.equal(unsampled?.[3], '00');
  const spans = await otlp.waitForSpans(2);
  const [server] = byKind(spans, SPAN_KIND.SERVER);
  const [client] = byKind(spans, SPAN_KIND.CLIENT);
  t.equal(server.traceId, TRACE_ID);
  t.equal(server.attributes['http.response.status_code'], 101, 'the upgrade answered 101');
  t.equal(client.parentSpanId, server.spanId);
  t.equal(client.attributes['http.response.status_code'], 101);
  t.equal(sampled?.[2], client.spanId, "the upstream's parent is the upgrade's client span");
  await gw.close();
  t.equal(otlp.spans.length, 2, 'the unsampled upgrade recorded nothing');
});

t.test('tracing off: the client traceparent passes through untouched and nothing is traced', async (t) => {
  const up = await startUpstream();
  const gw = await startGateway({ upstreams: { svc: { targets: [up.url] } }, routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'svc' }] });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const traceparent = `00-${TRACE_ID}-${PARENT_ID}-01`;
  t.equal((await call(gw.url, '/', { headers: { traceparent, tracestate: 'a=b' } })).status, 200);
  t.equal(up.seen[0].headers.traceparent, traceparent);
  t.equal(up.seen[0].headers.tracestate, 'a=b');
  t.notOk('traceId' in accessLines(gw)[0]);
  t.equal(await metricValue(gw.adminUrl, 'gateway_tracing_spans_exported_total'), 0);
});

t.test('a reload turns tracing on and off', async (t) => {
  const otlp = await startOtlpReceiver();
  const up = await startUpstream();
  const base = { upstreams: { svc: { targets: [up.url] } }, routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'svc' }] };
  const gw = await startGateway(base);
  t.teardown(async () => {
    await gw.close();
    await up.close();
    await otlp.close();
  });
  const on = await gw.gateway.reload(parseConfig(withTestDefaults({ ...base, tracing: { enabled: true, endpoint: otlp.url, export: FAST_EXPORT } })));
  t.same(on.restartRequired, []);
  t.equal((await call(gw.url, '/a')).status, 200);
  const [span] = await otlp.waitForSpans(1);
  t.equal(TRACEPARENT.exec(String(up.seen[0].headers.traceparent))?.[1], span.traceId);
  await gw.gateway.reload(parseConfig(withTestDefaults(base)));
  t.equal((await call(gw.url, '/b', { headers: { traceparent: `00-${TRACE_ID}-${PARENT_ID}-01` } })).status, 200);
  t.equal(up.seen[1].headers.traceparent, `00-${TRACE_ID}-${PARENT_ID}-01`, 'off again: passed through');
});

/** A collector that accepts connections and never answers. */
async function startSilentCollector(): Promise<{ url: string; posts: () => number; close(): Promise<void> }> {
  let posts = 0;
  const sockets = new Set<Socket>();
  const server: Server = createServer(() => {
    posts++;
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/v1/traces`,
    posts: () => posts,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

t.test('a collector that hangs neither slows nor fails requests: the queue stays bounded and overflow is counted', async (t) => {
  const collector = await startSilentCollector();
  const up = await startUpstream();
  const gw = await startGateway({
    upstreams: { svc: { targets: [up.url] } },
    routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'svc' }],
    tracing: { enabled: true, endpoint: collector.url, export: { maxQueueSize: 4, maxExportBatchSize: 2, scheduledDelayMs: 10, timeoutMs: 10000 } },
  });
  t.teardown(async () => {
    await collector.close();
    await gw.close();
    await up.close();
  });
  // An export may hang for timeoutMs (10 s) on this collector: a request that waited for one would take that long.
  let slowest = 0;
  for (let i = 0; i < 40; i++) {
    const started = performance.now();
    t.equal((await call(gw.url, `/${i}`)).status, 200);
    slowest = Math.max(slowest, performance.now() - started);
  }
  t.ok(slowest < 5000, `the slowest of 40 requests took ${Math.round(slowest)} ms while the collector hangs`);
  t.ok(collector.posts() >= 1, 'exports were attempted');
  const dropped = await metricValue(gw.adminUrl, 'gateway_tracing_spans_dropped_total', { reason: 'queue_full' });
  t.ok(dropped > 0, `spans beyond the queue are dropped and counted (${dropped})`);
});

t.test('a dead collector: requests are unaffected and the failed exports are counted', async (t) => {
  const collector = await startSilentCollector();
  const deadUrl = collector.url;
  await collector.close();
  const up = await startUpstream();
  const gw = await startGateway({
    upstreams: { svc: { targets: [up.url] } },
    routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'svc' }],
    tracing: { enabled: true, endpoint: deadUrl, export: { scheduledDelayMs: 10, maxExportBatchSize: 2, timeoutMs: 1000 } },
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  for (let i = 0; i < 10; i++) t.equal((await call(gw.url, `/${i}`)).status, 200);
  let failed = 0;
  for (let i = 0; i < 100 && failed === 0; i++) {
    await new Promise((r) => setTimeout(r, 50));
    failed = await metricValue(gw.adminUrl, 'gateway_tracing_spans_dropped_total', { reason: 'export_failed' });
  }
  t.ok(failed > 0, `spans of failed exports are counted (${failed})`);
  t.equal(await metricValue(gw.adminUrl, 'gateway_tracing_spans_exported_total'), 0);
});

t.test('configuration: defaults, clear errors, and what a reload cannot change', async (t) => {
  const base = { upstreams: { svc: { targets: ['http://127.0.0.1:1'] } }, routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'svc' }] };
  const cfg = parseConfig(withTestDefaults(base));
  t.same(cfg.tracing, {
    enabled: false,
    endpoint: 'http://localhost:4318/v1/traces',
    headers: {},
    serviceName: 'api-gateway',
    resourceAttributes: {},
    sampleRatio: 1,
    export: { maxQueueSize: 2048, maxExportBatchSize: 512, scheduledDelayMs: 5000, timeoutMs: 10000 },
  });
  const problems = (tracing: unknown, routeTracing?: unknown) => {
    try {
      parseConfig(withTestDefaults({ ...base, tracing, routes: [{ ...base.routes[0], ...(routeTracing === undefined ? {} : { tracing: routeTracing }) }] } as TestConfig));
    } catch (err) {
      if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: ${p.message}`).join('\n');
      throw err;
    }
    return '';
  };
  t.match(problems({ endpoint: 'localhost:4318' }), /tracing\.endpoint.*http:\/\/ or https:\/\/ URL/);
  t.match(problems({ sampleRatio: 2 }), /tracing\.sampleRatio/);
  t.match(problems({}, { sampleRatio: -1 }), /routes\.0\.tracing\.sampleRatio|routes\/0\/tracing\/sampleRatio|routes\[0\]\.tracing\.sampleRatio/);
  t.match(problems({ headers: { 'bad header': 'x' } }), /tracing\.headers.*header name/);

  const on = parseConfig(withTestDefaults({ ...base, tracing: { enabled: true } } as TestConfig));
  const ratio = parseConfig(withTestDefaults({ ...base, tracing: { enabled: true, sampleRatio: 0.1 } } as TestConfig));
  const moved = parseConfig(withTestDefaults({ ...base, tracing: { enabled: true, endpoint: 'http://collector:4318/v1/traces' } } as TestConfig));
  t.same(restartOnlyChanges(cfg, on), [], 'turning tracing on reloads');
  t.same(restartOnlyChanges(on, ratio), [], 'so does the ratio');
  t.same(restartOnlyChanges(on, moved), ['tracing'], 'the exporter is built once');
  t.same(restartOnlyChanges(cfg, { ...moved, tracing: { ...moved.tracing, enabled: false } }), [], 'nothing built yet while off');
});

import { Writable } from 'node:stream';
import pino from 'pino';
import t from 'tap';
import type { FastifyBaseLogger } from 'fastify';
import type { RequestContext } from '../src/context';
import { parseConfig } from '../src/config/load';
import { AccessLog } from '../src/observability/access-log';
import { makeKey } from './helpers/auth';
import { startGateway } from './helpers/gateway';
import { call } from './helpers/http';
import { startUpstream } from './helpers/upstream';

function collecting(): { log: FastifyBaseLogger; lines: () => Record<string, unknown>[] } {
  let text = '';
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      text += chunk.toString('utf8');
      done();
    },
  });
  const log = pino({ level: 'info' }, sink) as unknown as FastifyBaseLogger;
  return { log, lines: () => text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>) };
}

const ctx = (id: string, path: string, upstreamMs = -1): RequestContext =>
  ({
    id,
    path,
    query: '',
    route: { name: 'r' },
    upstreamMs,
    clientIp: '10.0.0.1',
    errorCode: null,
    traceId: '',
    req: { headers: { host: 'gw' } },
    identity: null,
    target: null,
    cacheResult: null,
    rateLimitResult: null,
    bytesIn: 10,
    bytesOut: 20,
  }) as unknown as RequestContext;

const DEFAULTS = parseConfig({}, { env: {} }).log;

t.test('access lines are whole JSON lines in order, whatever the path holds and however long it is', async (t) => {
  const { log, lines } = collecting();
  const access = new AccessLog(log, DEFAULTS);
  const long = '/long/' + 'x'.repeat(20000);
  access.write(ctx('a', '/api/users/1', 1.234), 'GET', 200, 3.005, false);
  access.write(ctx('b', '/caf\u00e9/\u00fcber/\u2603"q"\\'), 'POST', 404, 12, true);
  access.write(ctx('c', long), 'GET', 502, 0.5, false);
  for (let i = 0; i < 600; i++) access.write(ctx(`n${i}`, `/n/${i}`), 'GET', 200, i / 7, false);
  access.close();
  await new Promise((r) => setImmediate(r));
  const got = lines();
  t.equal(got.length, 603);
  t.match(got[0], { reqId: 'a', method: 'GET', path: '/api/users/1', status: 200, ms: 3.01, route: 'r', upstreamMs: 1.23, client: '10.0.0.1', msg: 'request completed' });
  t.match(got[1], { reqId: 'b', path: '/caf\u00e9/\u00fcber/\u2603"q"\\', status: 404, ms: 12, truncated: true });
  t.notOk('upstreamMs' in got[1], 'no upstream time when the upstream was not called');
  t.equal(got[2].path, long, 'a line longer than the batch room is written whole');
  t.same(got.slice(3).map((l) => l.reqId), Array.from({ length: 600 }, (_, i) => `n${i}`), 'batches keep the order');
  t.same(got.slice(3).map((l) => l.ms), Array.from({ length: 600 }, (_, i) => Math.round((i / 7) * 100) / 100), 'durations with two decimals');
});

const ISO_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z$/;

t.test('through a gateway: every field people search by, in the order requests completed', async (t) => {
  const up = await startUpstream((req, res) => {
    res.setHeader('cache-control', 'max-age=60');
    res.end(req.url!.includes('fail') ? '' : 'hello');
  });
  const key = makeKey();
  const gw = await startGateway({
    upstreams: { up: { targets: [up.url] } },
    auth: { apiKeys: { header: 'X-API-Key' } },
    consumers: [{ id: 'alice', apiKeys: [{ prefix: key.prefix, sha256: key.sha256 }] }],
    routes: [
      { name: 'open', match: { prefix: '/open' }, upstream: 'up', cache: { defaultTtl: 60 } },
      { name: 'keyed', match: { prefix: '/keyed' }, upstream: 'up', auth: { methods: ['apiKey'] }, rateLimit: { limits: [{ rate: 1, per: '1m' }] } },
    ],
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const answers = [
    await call(gw.url, '/open/a?x=1', { headers: { host: 'api.example', 'user-agent': 'test-agent/1' } }),
    await call(gw.url, '/open/a?x=1', { headers: { host: 'api.example' } }),
    await call(gw.url, '/keyed/1', { headers: { 'x-api-key': key.key } }),
    await call(gw.url, '/keyed/2', { headers: { 'x-api-key': key.key } }),
    await call(gw.url, '/nowhere'),
  ];
  t.same(
    answers.map((a) => a.status),
    [200, 200, 200, 429, 404],
  );
  gw.gateway.flushLogs();
  const lines = gw.logs.filter((l) => l.msg === 'request completed');
  t.same(
    lines.map((l) => l.reqId),
    answers.map((a) => a.headers['x-request-id']),
    'one line per request, in order',
  );
  for (const l of lines) {
    t.match(l.time, ISO_TIME, 'ISO-8601 time');
    t.equal(l.level, 'info', 'level as a word');
    t.ok((l.bytesIn as number) > 0 && (l.bytesOut as number) > 0, 'bytes in and out');
    t.type(l.ms, 'number');
    t.notOk('traceId' in l, 'no trace id without tracing');
    t.notOk('userAgent' in l, 'the user agent is opt-in');
    t.notOk('query' in l, 'the query is opt-in');
  }
  const [miss, hit, allowed, limited, unrouted] = lines;
  t.match(miss, { method: 'GET', host: 'api.example', path: '/open/a', status: 200, route: 'open', target: up.url, client: '127.0.0.1', cache: 'miss' });
  t.type(miss.upstreamMs, 'number');
  t.match(hit, { route: 'open', cache: 'hit', status: 200 });
  t.notOk('upstreamMs' in hit, 'a cache hit has no upstream time');
  t.notOk('target' in hit);
  t.match(allowed, { route: 'keyed', consumer: 'alice', rateLimit: 'allowed', status: 200 });
  t.match(limited, { route: 'keyed', consumer: 'alice', rateLimit: 'limited', status: 429, error: 'RATE_LIMITED' });
  t.match(unrouted, { status: 404, error: 'ROUTE_NOT_FOUND' });
  t.notOk('route' in unrouted);
  // The bytes are the ones on the wire: the response carries its head.
  t.ok((miss.bytesOut as number) > 'hello'.length + 100, 'the response head is counted');
});

t.test('logfmt, chosen fields, redacted query parameters and headers', async (t) => {
  const up = await startUpstream();
  const gw = await startGateway({
    log: {
      accessFormat: 'logfmt',
      accessFields: ['reqId', 'method', 'path', 'query', 'status', 'userAgent', 'ms'],
      accessHeaders: ['X-Tenant', 'Authorization'],
      redactQuery: ['token', 'Signature'],
    },
    upstreams: { up: { targets: [up.url] } },
    routes: [{ name: 'r', match: { prefix: '/r' }, upstream: 'up' }],
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  await call(gw.url, '/r/1?token=s3cret&page=2&SIGNATURE=abc&x', {
    headers: { 'user-agent': 'curl/8 (x"y)', 'x-tenant': 'acme', authorization: 'Bearer top-secret', 'x-request-id': 'req-1' },
  });
  await call(gw.url, '/r/2', { headers: { 'x-request-id': 'req-2' } });
  gw.gateway.flushLogs();
  const text = gw.logs.filter((l) => typeof l.text === 'string' && (l.text as string).includes('msg="request completed"')).map((l) => l.text as string);
  t.equal(text.length, 2);
  t.match(text[0], /^time=\d{4}-\d\d-\d\dT[\d:.]+Z level=info reqId=req-1 method=GET path=\/r\/1 /);
  t.match(text[0], ' query="?token=[redacted]&page=2&SIGNATURE=[redacted]&x" status=200 ', 'a value with = is quoted');
  t.match(text[0], ' userAgent="curl/8 (x\\"y)" ms=');
  t.match(text[0], ' header.x-tenant=acme header.authorization=[redacted] msg="request completed"');
  t.notMatch(text[0], /s3cret|abc|top-secret|route=|client=/, 'no secrets, no fields that were not chosen');
  t.match(text[1], /reqId=req-2 method=GET path=\/r\/2 status=200 ms=[\d.]+ msg="request completed"$/, 'absent values are left out');
  t.notOk(gw.logs.some((l) => l.msg === 'request completed'), 'no JSON access lines');
});

t.test('the access options are checked', async (t) => {
  t.throws(() => parseConfig({ log: { accessFields: ['path', 'nope'] } }, { env: {} }), /log\.accessFields/);
  t.throws(() => parseConfig({ log: { accessFormat: 'xml' } }, { env: {} }), /log\.accessFormat/);
  t.throws(() => parseConfig({ log: { accessHeaders: ['bad header'] } }, { env: {} }), /log\.accessHeaders/);
});

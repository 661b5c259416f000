import { connect } from 'node:net';
import t from 'tap';
import { RequestContext } from '../src/context';
import { compileTemplate, render } from '../src/plugins/policies/template';
import { startGateway } from './helpers/gateway';
import { call } from './helpers/http';
import { startUpstream } from './helpers/upstream';

t.test('header rules: request and response, with request id and route templates', async (t) => {
  const up = await startUpstream((req, res, body) => {
    res.writeHead(200, [
      'content-type', 'application/json',
      'server', 'upstream/1.0',
      'x-powered-by', 'php',
      'x-internal-id', '42',
      'x-kept', 'yes',
      'cache-control', 'max-age=60',
    ]);
    res.end(JSON.stringify({ headers: req.headers, body }));
  });
  const gw = await startGateway({
    upstreams: { up: { targets: [up.url] } },
    routes: [
      {
        name: 'ruled',
        match: { prefix: '/ruled' },
        upstream: 'up',
        policies: {
          headers: {
            request: {
              remove: ['X-Debug'],
              rename: { 'X-Old-Token': 'X-New-Token' },
              set: { 'X-Trace': 'req-{requestId}', 'X-Route': '{route}', 'X-Consumer': '{consumerId}' },
              add: { 'X-Extra': 'via {route}' },
            },
            response: {
              remove: ['x-powered-by', 'Server'],
              rename: { 'x-internal-id': 'X-Public-Id' },
              set: { 'Cache-Control': 'no-store', 'X-Served-By': '{route}/{requestId}' },
              add: { 'X-Kept': 'also' },
            },
          },
        },
      },
      { name: 'bare', match: { prefix: '/bare' }, upstream: 'up' },
    ],
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });

  const res = await call(gw.url, '/ruled/x', {
    headers: {
      'x-request-id': 'trace-123',
      'x-debug': '1',
      'x-old-token': 'abc',
      'x-trace': 'client-forged',
      'x-consumer': 'forged-consumer',
      'x-extra': 'from-client',
    },
  });
  t.equal(res.status, 200);
  const seen = up.seen.at(-1)!;
  t.notOk('x-debug' in seen.headers, 'removed request header');
  t.notOk('x-old-token' in seen.headers, 'renamed away');
  t.equal(seen.headers['x-new-token'], 'abc', 'renamed, value kept');
  t.equal(seen.headers['x-trace'], 'req-trace-123', 'set replaces the client value, request id template');
  t.equal(seen.headers['x-route'], 'ruled', 'route template');
  t.notOk('x-consumer' in seen.headers, 'anonymous: the consumer template leaves the header out, and the forged one is gone');
  t.equal(seen.headers['x-extra'], 'from-client, via ruled', 'add keeps the client value');
  t.equal(seen.headers['x-request-id'], 'trace-123', 'the gateway still owns the request id');

  t.notOk('server' in res.headers, 'response header removed (case-insensitive)');
  t.notOk('x-powered-by' in res.headers);
  t.notOk('x-internal-id' in res.headers);
  t.equal(res.headers['x-public-id'], '42', 'response header renamed');
  t.equal(res.headers['cache-control'], 'no-store', 'set replaces the upstream value');
  t.equal(res.headers['x-served-by'], 'ruled/trace-123');
  t.equal(res.headers['x-kept'], 'yes, also');
  t.equal(res.headers['x-request-id'], 'trace-123');
  t.equal(res.json<{ body: string }>().body, '', 'body untouched');

  // A generated request id is the one the templates see.
  const gen = await call(gw.url, '/ruled/y');
  const id = gen.headers['x-request-id'] as string;
  t.match(id, /^[0-9a-f-]{36}$/);
  t.equal(up.seen.at(-1)!.headers['x-trace'], `req-${id}`);
  t.equal(gen.headers['x-served-by'], `ruled/${id}`);

  const bare = await call(gw.url, '/bare/x', { headers: { 'x-debug': '1' } });
  t.equal(up.seen.at(-1)!.headers['x-debug'], '1', 'other routes untouched');
  t.equal(bare.headers['x-powered-by'], 'php');

  // Gateway errors keep their shape and are not rewritten.
  const missing = await call(gw.url, '/nowhere');
  t.equal(missing.status, 404);
  t.equal(missing.headers['content-type'], 'application/problem+json');
});

t.test('templates: the consumer id is filled in once a consumer is known', async (t) => {
  const tpl = compileTemplate('{consumerId}@{route}#{requestId}', 'orders');
  t.equal(typeof tpl, 'function');
  const ctx = new RequestContext({} as never, {} as never, 'rid-1', {} as never, 0);
  t.equal(render(tpl, ctx), null, 'no consumer: left out');
  ctx.identity = { consumerId: 'acme', roles: [], scopes: [], method: 'apiKey' };
  t.equal(render(tpl, ctx), 'acme@orders#rid-1');
  t.equal(compileTemplate('static {route}', 'r1'), 'static r1', 'a template of start-up values is a constant');
});

interface Envelope {
  requestId: string;
  timestamp: string;
  data: unknown;
}

t.test('envelope: JSON wrapped while streaming, everything else untouched', async (t) => {
  const binary = Buffer.from([0, 1, 2, 250, 251, 252, 253, 254, 255, 10, 13, 123, 125]);
  const up = await startUpstream(async (req, res) => {
    const url = req.url ?? '';
    if (url === '/json') {
      res.writeHead(200, { 'content-type': 'application/json; charset=utf-8', etag: '"v1"', 'content-length': 20 });
      res.end('{"id":7,"name":"x"} ');
    } else if (url === '/vendor-json-chunked') {
      res.writeHead(201, { 'content-type': 'application/vnd.api+json' });
      res.write('[1,');
      await new Promise((r) => setTimeout(r, 20));
      res.end('2,3]');
    } else if (url === '/binary') {
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': binary.length });
      res.end(binary);
    } else if (url === '/text') {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.end('plain');
    } else if (url === '/problem') {
      res.writeHead(422, { 'content-type': 'application/problem+json' });
      res.end('{"title":"bad"}');
    } else if (url === '/empty') {
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': 0 });
      res.end();
    } else if (url === '/empty-chunked') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end();
    } else if (url === '/nocontent') {
      res.writeHead(204, { 'content-type': 'application/json' });
      res.end();
    } else if (url === '/error-json') {
      res.writeHead(500, { 'content-type': 'application/json' });
      res.end('{"error":"boom"}');
    } else if (url === '/gzip') {
      res.writeHead(200, { 'content-type': 'application/json', 'content-encoding': 'gzip' });
      res.end(Buffer.from([0x1f, 0x8b, 0, 0]));
    } else {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.end(JSON.stringify({ acceptEncoding: req.headers['accept-encoding'] ?? null, range: req.headers.range ?? null }));
    }
  });
  const gone = await startUpstream();
  await gone.close();
  const gw = await startGateway({
    upstreams: { up: { targets: [up.url] }, gone: { targets: [gone.url] } },
    routes: [
      { name: 'env', match: { prefix: '/env' }, upstream: 'up', rewrite: { stripPrefix: true }, policies: { envelope: true } },
      { name: 'env-down', match: { prefix: '/down' }, upstream: 'gone', policies: { envelope: true } },
      { name: 'plain', match: { prefix: '/plain' }, upstream: 'up', rewrite: { stripPrefix: true } },
    ],
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });

  const before = Date.now();
  const json = await call(gw.url, '/env/json', { headers: { 'x-request-id': 'env-1' } });
  t.equal(json.status, 200);
  t.equal(json.headers['content-type'], 'application/json; charset=utf-8');
  t.equal(Number(json.headers['content-length']), Buffer.byteLength(json.body), 'Content-Length recomputed');
  t.notOk('etag' in json.headers, 'the upstream validator no longer describes the bytes');
  const env = json.json<Envelope>();
  t.same(Object.keys(env), ['requestId', 'timestamp', 'data']);
  t.equal(env.requestId, 'env-1');
  t.same(env.data, { id: 7, name: 'x' });
  const ts = Date.parse(env.timestamp);
  t.ok(ts >= before - 1000 && ts <= Date.now() + 1000, 'timestamp is now, ISO 8601');
  t.match(env.timestamp, /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/);

  const chunked = await call(gw.url, '/env/vendor-json-chunked');
  t.equal(chunked.status, 201);
  t.equal(chunked.headers['transfer-encoding'], 'chunked');
  t.same(chunked.json<Envelope>().data, [1, 2, 3], '+json types wrapped, chunk by chunk');

  const bin = await call(gw.url, '/env/binary');
  t.equal(bin.status, 200);
  t.equal(bin.headers['content-type'], 'application/octet-stream');
  const rawBin = await rawGet(gw.port, '/env/binary');
  t.ok(rawBin.body.equals(binary), 'binary body byte for byte');
  t.equal(rawBin.head.match(/content-length: (\d+)/i)?.[1], String(binary.length));

  t.equal((await call(gw.url, '/env/text')).body, 'plain', 'text untouched');
  const problem = await call(gw.url, '/env/problem');
  t.equal(problem.status, 422);
  t.same(problem.json(), { title: 'bad' }, 'upstream problem details keep their shape');

  t.equal((await call(gw.url, '/env/empty')).json<Envelope>().data, null, 'empty JSON body (with length) → data null');
  t.equal((await call(gw.url, '/env/empty-chunked')).json<Envelope>().data, null, 'empty JSON body (chunked) → data null');
  const nc = await call(gw.url, '/env/nocontent');
  t.equal(nc.status, 204);
  t.equal(nc.body, '');

  const err = await call(gw.url, '/env/error-json');
  t.equal(err.status, 500);
  t.same(err.json<Envelope>().data, { error: 'boom' }, 'upstream JSON errors are wrapped too');

  const gz = await rawGet(gw.port, '/env/gzip');
  t.ok(gz.body.equals(Buffer.from([0x1f, 0x8b, 0, 0])), 'an encoded body is never wrapped');

  const head = await call(gw.url, '/env/json', { method: 'HEAD' });
  t.equal(head.status, 200);
  t.equal(head.body, '');
  t.equal(head.headers['content-length'], '20', 'HEAD keeps the upstream length: there is no body to wrap');

  const negotiated = await call(gw.url, '/env/echo', { headers: { 'accept-encoding': 'gzip, br', range: 'bytes=0-5' } });
  t.same(negotiated.json<Envelope>().data, { acceptEncoding: null, range: null }, 'the upstream is asked for a whole, unencoded body');

  const gatewayError = await call(gw.url, '/down/x');
  t.equal(gatewayError.status, 502);
  t.equal(gatewayError.headers['content-type'], 'application/problem+json');
  t.equal(gatewayError.json().code, 'UPSTREAM_CONNECT_FAILED', 'gateway errors keep their own shape');

  const plain = await call(gw.url, '/plain/json');
  t.equal(plain.body, '{"id":7,"name":"x"} ', 'routes without the envelope are untouched');
});

t.test('envelope on a streamed response does not wait for the end', async (t) => {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  const up = await startUpstream(async (_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json' });
    res.write('[1');
    await gate;
    res.end(']');
  });
  const gw = await startGateway({
    upstreams: { up: { targets: [up.url] } },
    routes: [{ name: 'env', match: { prefix: '/' }, upstream: 'up', policies: { envelope: true } }],
  });
  t.teardown(async () => {
    release();
    await gw.close();
    await up.close();
  });
  const s = connect(gw.port, '127.0.0.1', () => s.write('GET /stream HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n'));
  let got = '';
  const early = new Promise<void>((resolve) => {
    s.on('data', (d: Buffer) => {
      got += d.toString('latin1');
      if (/"data":\r\n2\r\n\[1\r\n/.test(got)) resolve();
    });
  });
  const timer = setTimeout(() => s.destroy(), 5000);
  await early;
  clearTimeout(timer);
  t.pass('the head and the first chunk arrive while the upstream is still sending');
  release();
  await new Promise((r) => s.on('end', r));
  const body = dechunk(Buffer.from(got.slice(got.indexOf('\r\n\r\n') + 4), 'latin1')).toString();
  t.same((JSON.parse(body) as Envelope).data, [1], 'the tail follows the last upstream byte');
});

t.test('deprecated route: Deprecation (RFC 9745), Sunset (RFC 8594) and Link headers', async (t) => {
  const up = await startUpstream((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', deprecation: 'true', link: '<https://up.example/docs>; rel="help"' });
    res.end('old');
  });
  const gw = await startGateway({
    upstreams: { up: { targets: [up.url] } },
    routes: [
      {
        name: 'v1',
        match: { prefix: '/v1' },
        upstream: 'up',
        policies: {
          deprecation: { date: '2023-06-30T23:59:59Z', sunset: '2026-12-31T23:59:59+00:00', link: 'https://developer.example.com/v1-migration' },
        },
      },
      { name: 'v2', match: { prefix: '/v2' }, upstream: 'up' },
    ],
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const res = await call(gw.url, '/v1/items');
  t.equal(res.status, 200);
  t.equal(res.headers.deprecation, '@1688169599', 'structured-field date, epoch seconds');
  t.equal(res.headers.sunset, 'Thu, 31 Dec 2026 23:59:59 GMT', 'HTTP-date');
  const links = res.rawHeaders.filter((_, i) => i % 2 === 1 && res.rawHeaders[i - 1].toLowerCase() === 'link');
  t.ok(links.includes('<https://developer.example.com/v1-migration>; rel="deprecation"; type="text/html"'), links.join(' | '));
  t.ok(links.includes('<https://up.example/docs>; rel="help"'), "the upstream's own links stay");
  t.equal(res.rawHeaders.filter((h) => h.toLowerCase() === 'deprecation').length, 1, 'one Deprecation header only');
  const v2 = await call(gw.url, '/v2/items');
  t.equal(v2.headers.deprecation, 'true', 'other routes pass the upstream header through');
  t.notOk('sunset' in v2.headers);
});

/** A GET over a raw socket, returning the head as text and the body as bytes (de-chunked when needed). */
function rawGet(port: number, path: string): Promise<{ head: string; body: Buffer }> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => s.write(`GET ${path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n`));
    const chunks: Buffer[] = [];
    s.on('data', (d: Buffer) => chunks.push(d));
    s.on('error', reject);
    s.on('end', () => {
      const all = Buffer.concat(chunks);
      const split = all.indexOf('\r\n\r\n');
      const head = all.subarray(0, split).toString('latin1');
      const body = all.subarray(split + 4);
      resolve({ head, body: /transfer-encoding: chunked/i.test(head) ? dechunk(body) : body });
    });
  });
}

function dechunk(body: Buffer): Buffer {
  const parts: Buffer[] = [];
  let at = 0;
  for (;;) {
    const eol = body.indexOf('\r\n', at);
    const size = parseInt(body.subarray(at, eol).toString('latin1'), 16);
    if (!size) break;
    parts.push(body.subarray(eol + 2, eol + 2 + size));
    at = eol + 2 + size + 2;
  }
  return Buffer.concat(parts);
}

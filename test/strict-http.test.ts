import { connect, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import { bytes, headerValues, mint, now } from './helpers/auth';
import { startGateway, type TestGateway } from './helpers/gateway';
import { call } from './helpers/http';
import { metricValue } from './helpers/metrics';
import { startUpstream, type TestUpstream } from './helpers/upstream';

const SECRET = 'test-secret-that-is-long-enough-for-hs256-0123456789';

/** A raw client: writes what the test says when it says it, reads everything until the server closes. */
function rawClient(port: number): { socket: Socket; text: () => string; closed: Promise<string>; closedAt: () => number } {
  const socket = connect(port, '127.0.0.1');
  let out = '';
  let at = 0;
  socket.on('data', (d: Buffer) => (out += d.toString('latin1')));
  const closed = new Promise<string>((resolve) => {
    socket.on('error', () => undefined);
    socket.on('close', () => {
      at = Date.now();
      resolve(out);
    });
  });
  return { socket, text: () => out, closed, closedAt: () => at };
}

/** Sends `text` on a fresh connection; resolves with everything answered once the gateway closes (5 s at most). */
async function exchange(port: number, text: string): Promise<string> {
  const c = rawClient(port);
  c.socket.write(text);
  const timer = setTimeout(() => c.socket.destroy(), 5000);
  const out = await c.closed;
  clearTimeout(timer);
  return out;
}

function statusOf(raw: string): number {
  return Number(/^HTTP\/1\.1 (\d{3}) /.exec(raw)?.[1] ?? 0);
}

function problemOf(raw: string): Record<string, unknown> {
  return JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)) as Record<string, unknown>;
}

function headerOf(raw: string, name: string): string | undefined {
  const head = raw.slice(0, raw.indexOf('\r\n\r\n'));
  for (const line of head.split('\r\n').slice(1)) {
    const colon = line.indexOf(':');
    if (line.slice(0, colon).toLowerCase() === name) return line.slice(colon + 1).trim();
  }
  return undefined;
}

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

let up: TestUpstream;
let gw: TestGateway;

t.before(async () => {
  up = await startUpstream();
  gw = await startGateway({
    upstreams: { up: { targets: [up.url] } },
    trustedProxies: ['127.0.0.0/8'],
    auth: { jwt: { algorithms: ['HS256'], secret: SECRET }, apiKeys: { header: 'X-Gateway-Key' } },
    routes: [
      { name: 'open', match: { prefix: '/open' }, upstream: 'up' },
      { name: 'pass', match: { prefix: '/pass' }, upstream: 'up', auth: { methods: ['jwt'], forwardCredentials: true } },
      { name: 'private', match: { prefix: '/private' }, upstream: 'up', auth: { methods: ['jwt'] } },
      { name: 'matrix', match: { prefix: '/matrix', allowPathParameters: true }, upstream: 'up' },
      { name: 'readonly', match: { prefix: '/readonly', methods: ['GET'] }, upstream: 'up' },
      { name: 'catchall', match: { prefix: '/', hosts: ['catchall.example'] }, upstream: 'up' },
    ],
  });
});

t.teardown(async () => {
  await gw.close();
  await up.close();
});

/** Sends `text` raw and checks the answer's status and code, and that nothing reached the upstream. */
async function refusedRaw(t: Test, text: string, status: number, code: string, what: string): Promise<string> {
  const before = up.seen.length;
  const raw = await exchange(gw.port, text);
  t.equal(statusOf(raw), status, `${what}: ${status}`);
  t.equal(headerOf(raw, 'content-type'), 'application/problem+json', `${what}: problem+json`);
  t.equal(problemOf(raw).code, code, `${what}: ${code}`);
  t.equal(headerOf(raw, 'connection'), 'close', `${what}: the connection ends`);
  await sleep(50);
  t.equal(up.seen.length, before, `${what}: never forwarded`);
  return raw;
}

t.test('request lines other than HTTP/1.0 and HTTP/1.1 are refused and never forwarded', async (t) => {
  await refusedRaw(t, 'GET /open/a\r\n\r\n', 400, 'BAD_REQUEST_LINE', 'HTTP/0.9 line without a version');
  await refusedRaw(t, 'GET /open/a\r\nHost: x\r\n\r\n', 400, 'BAD_REQUEST_LINE', 'a version-less line followed by headers');
  await refusedRaw(
    t,
    'GET /open/a\nX-Injected: yes HTTP/1.1\r\nHost: x\r\n\r\n',
    400,
    'BAD_REQUEST_LINE',
    'a raw LF inside the target (it would inject a header line)',
  );
  await refusedRaw(t, 'GET /nowhere\r\n\r\n', 400, 'BAD_REQUEST_LINE', 'HTTP/0.9 line on a path no route matches');
  await refusedRaw(t, 'M-SEARCH /open/a\r\n\r\n', 400, 'BAD_REQUEST_LINE', 'HTTP/0.9 line with a method the router does not list');
  await refusedRaw(t, 'GET /open/%zz\r\n\r\n', 400, 'BAD_REQUEST_LINE', 'HTTP/0.9 line with a malformed target');
  await refusedRaw(t, 'GET /open/a HTTP/2.0\r\nHost: x\r\n\r\n', 505, 'HTTP_VERSION_NOT_SUPPORTED', 'HTTP/2.0 on a 1.x connection');
  await refusedRaw(t, 'GET /open/a HTTP/1.2\r\nHost: x\r\n\r\n', 505, 'HTTP_VERSION_NOT_SUPPORTED', 'HTTP/1.2');
  await refusedRaw(t, 'GET /open/a HTTP/3.0\r\nHost: x\r\n\r\n', 505, 'HTTP_VERSION_NOT_SUPPORTED', 'HTTP/3.0 as text');
  await refusedRaw(t, 'PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n', 505, 'HTTP_VERSION_NOT_SUPPORTED', 'the HTTP/2 connection preface');
  await refusedRaw(t, 'GET /open/a HTTP/1.1\nHost: x\n\n', 400, 'BAD_REQUEST', 'bare LF line ends (a malformed line, not a version)');

  const before = up.seen.length;
  const ok10 = await exchange(gw.port, 'GET /open/ten HTTP/1.0\r\nHost: x\r\n\r\n');
  t.equal(statusOf(ok10), 200, 'HTTP/1.0 is served');
  const ok11 = await exchange(gw.port, 'GET /open/eleven HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  t.equal(statusOf(ok11), 200, 'HTTP/1.1 is served');
  t.same(
    up.seen.slice(before).map((s) => s.url),
    ['/open/ten', '/open/eleven'],
    'only the HTTP/1.x requests reached the upstream',
  );
});

t.test('two Host headers are refused (RFC 9112 §3.2)', async (t) => {
  await refusedRaw(t, 'GET /open/h HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n', 400, 'DUPLICATE_HEADER', 'Host twice');
  await refusedRaw(t, 'GET /open/h HTTP/1.1\r\nhost: a.example\r\nHOST: a.example\r\n\r\n', 400, 'DUPLICATE_HEADER', 'Host twice in two cases');
  await refusedRaw(t, 'GET /nowhere HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n', 400, 'DUPLICATE_HEADER', 'also where no route matches');
  const ok = await exchange(gw.port, 'GET /open/h HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n');
  t.equal(statusOf(ok), 200, 'one Host passes');
});

t.test('a Host value that is not a host is refused (RFC 9112 §3.2)', async (t) => {
  await refusedRaw(t, 'GET /open/h HTTP/1.1\r\nHost: a.example/b\r\n\r\n', 400, 'BAD_HOST', 'a path in Host');
  await refusedRaw(t, 'GET /open/h HTTP/1.1\r\nHost: user@a.example\r\n\r\n', 400, 'BAD_HOST', 'userinfo in Host');
  await refusedRaw(t, 'GET /open/h HTTP/1.1\r\nHost: a.example?x\r\n\r\n', 400, 'BAD_HOST', 'a query in Host');
  await refusedRaw(t, 'GET /open/h HTTP/1.1\r\nHost: a .example\r\n\r\n', 400, 'BAD_HOST', 'a space in Host');
  await refusedRaw(t, 'GET /nowhere HTTP/1.1\r\nHost: a\\b\r\n\r\n', 400, 'BAD_HOST', 'a backslash in Host, where no route matches');
  await refusedRaw(t, 'GET /open/h HTTP/1.1\r\n\r\n', 400, 'BAD_HOST', 'no Host in HTTP/1.1, in problem+json');
  for (const host of ['a.example:8080', '127.0.0.1', '[::1]:80', '']) {
    const ok = await exchange(gw.port, `GET /open/h HTTP/1.1\r\nHost: ${host}\r\nConnection: close\r\n\r\n`);
    t.equal(statusOf(ok), 200, `Host "${host}" passes`);
  }
});

t.test('an absolute-form target is accepted and its authority replaces Host (RFC 9112 §3.2.2)', async (t) => {
  const res = await exchange(gw.port, 'GET http://a.example/open/af?q=1 HTTP/1.1\r\nHost: b.example\r\nConnection: close\r\n\r\n');
  t.equal(statusOf(res), 200, 'absolute-form with another Host: 200');
  const seen = up.seen.at(-1)!;
  t.equal(seen.url, '/open/af?q=1', 'forwarded in origin-form');
  t.same(headerValues(seen.rawHeaders, 'x-forwarded-host'), ['a.example'], "the target's authority, not the Host header");
  const routed = await exchange(gw.port, 'GET HTTP://CATCHALL.example/zz HTTP/1.1\r\nHost: other.example\r\nConnection: close\r\n\r\n');
  t.equal(statusOf(routed), 200, "host routing reads the target's authority");
  t.equal(up.seen.at(-1)!.url, '/zz');
  const bare = await exchange(gw.port, 'GET http://a.example?x=1 HTTP/1.0\r\n\r\n');
  t.equal(statusOf(bare), 404, 'an empty path is the root (no route here), also without any Host');
  const before = up.seen.length;
  const userinfo = await exchange(gw.port, 'GET http://u@a.example/open/x HTTP/1.1\r\nHost: a.example\r\nConnection: close\r\n\r\n');
  t.equal(statusOf(userinfo), 400, 'userinfo in the target: 400');
  t.equal(problemOf(userinfo).code, 'BAD_PATH');
  t.equal(up.seen.length, before, 'userinfo in the target: never forwarded');
  await refusedRaw(t, 'GET http://a.example/open/x HTTP/1.1\r\nHost: a.example\r\nHost: b.example\r\n\r\n', 400, 'DUPLICATE_HEADER', 'two Host headers still');
});

t.test('an HTTP/1.0 request without Host is served, and no empty X-Forwarded-Host goes upstream', async (t) => {
  const res = await exchange(gw.port, 'GET /open/nohost HTTP/1.0\r\n\r\n');
  t.equal(statusOf(res), 200);
  const seen = up.seen.at(-1)!;
  t.equal(seen.url, '/open/nohost');
  t.same(headerValues(seen.rawHeaders, 'x-forwarded-host'), [], 'no X-Forwarded-Host at all');
  t.same(headerValues(seen.rawHeaders, 'x-forwarded-proto'), ['http'], 'the other forwarded headers still go');
});

t.test('credentials appear once, on every route, before authentication', async (t) => {
  const alice = await mint({ sub: 'alice', exp: now() + 600 }, bytes(SECRET));
  const mallory = await mint({ sub: 'mallory', exp: now() + 600 }, bytes(SECRET));
  const refused = async (path: string, headers: Record<string, string | string[]>, what: string) => {
    const before = up.seen.length;
    const res = await call(gw.url, path, { headers });
    t.equal(res.status, 400, `${what}: 400`);
    t.equal(res.json().code, 'DUPLICATE_HEADER', `${what}: DUPLICATE_HEADER`);
    t.equal(up.seen.length, before, `${what}: never forwarded`);
    return res;
  };

  const two = await refused('/pass/x', { authorization: [`Bearer ${alice}`, `Bearer ${mallory}`] }, 'two Authorization headers, forwardCredentials');
  t.match(two.json().detail, /Authorization/);
  await refused('/private/x', { authorization: [`Bearer ${alice}`, 'Bearer not-even-a-token'] }, 'two Authorization headers, a second copy never verified');
  await refused('/open/x', { authorization: ['Basic YTpi', 'Basic Yzpk'] }, 'two Authorization headers on a route without auth');
  await refused('/open/x', { 'X-Gateway-Key': 'gk_a', X_Gateway_Key: 'gk_b' }, 'the API-key header in two spellings');
  await refused('/open/x', { 'x-gateway-key': 'gk_a', 'X-GATEWAY_key': 'gk_b' }, 'the API-key header in two spellings and cases');
  const keys = await refused('/open/x', { 'x-gateway-key': ['gk_a', 'gk_b'] }, 'the API-key header twice in one spelling');
  t.match(keys.json().detail, /X-Gateway-Key/);

  const one = await call(gw.url, '/pass/x', { headers: { authorization: `Bearer ${alice}` } });
  t.equal(one.status, 200, 'one credential passes');
  t.same(headerValues(up.seen.at(-1)!.rawHeaders, 'authorization'), [`Bearer ${alice}`], 'forwardCredentials forwards the one verified copy');
  const plain = await call(gw.url, '/open/x', { headers: { 'X-API-Key': 'a', 'X_API_Key': 'b' } });
  t.equal(plain.status, 200, 'another header name than the configured API-key header is not counted');
});

t.test('dot segments with parameters are refused; ";" parameters only where the route allows them', async (t) => {
  const before = up.seen.length;
  for (const path of ['/open/..;x/private/a', '/open/.;x/a', '/open/%2e%2e;/private/a', '/open/..;/private/a', '/open/..%3Bx/a', '/matrix/..;/private/a', '/matrix/%2E;x/a']) {
    const res = await call(gw.url, path);
    t.equal(res.status, 400, `${path}: 400`);
    t.equal(res.json().code, 'BAD_PATH', `${path}: BAD_PATH`);
  }
  for (const path of ['/open/a;jsessionid=1/b', '/open/a;x', '/open/a%3Bb', '/private/a;x']) {
    const res = await call(gw.url, path);
    t.equal(res.status, 400, `${path}: 400 on a route that does not allow parameters`);
    t.match(res.json().detail, /allowPathParameters/);
  }
  // The catch-all takes /private;x/a (no route has the prefix /private;x); a Tomcat upstream would
  // serve it as /private/a, past the private route's authentication.
  const bypass = await call(gw.url, '/private;x/a', { headers: { host: 'catchall.example' } });
  t.equal(bypass.status, 400, 'a parameter on a prefix segment does not slip past that route through a catch-all');
  t.equal((await call(gw.url, '/anything', { headers: { host: 'catchall.example' } })).status, 200, 'the catch-all serves');
  t.equal(up.seen.length, before + 1, 'none of them was forwarded');

  const matrix = await call(gw.url, '/matrix/cars;color=red/1;jsessionid=abc');
  t.equal(matrix.status, 200, 'a route may allow ";" parameters in ordinary segments');
  t.equal(up.seen.at(-1)!.url, '/matrix/cars;color=red/1;jsessionid=abc', 'and forwards them as sent');
});

t.test('a trusted proxy sending X-Forwarded-Host/-Proto twice: the nearest value wins', async (t) => {
  const text =
    'GET /open/xf HTTP/1.1\r\nHost: gw.example\r\nX-Forwarded-Host: forged.example\r\nX-Forwarded-Proto: https\r\n' +
    'X-Forwarded-Host: api.example.com\r\nX-Forwarded-Proto: http\r\nConnection: close\r\n\r\n';
  t.equal(statusOf(await exchange(gw.port, text)), 200);
  const seen = up.seen.at(-1)!;
  t.same(headerValues(seen.rawHeaders, 'x-forwarded-host'), ['api.example.com'], 'the last copy, alone');
  t.same(headerValues(seen.rawHeaders, 'x-forwarded-proto'), ['http']);

  await call(gw.url, '/open/xf2', { headers: { 'x-forwarded-host': 'forged.example, api.example.com', 'x-forwarded-proto': 'http, https' } });
  const list = up.seen.at(-1)!;
  t.same(headerValues(list.rawHeaders, 'x-forwarded-host'), ['api.example.com'], 'the last item of a list');
  t.same(headerValues(list.rawHeaders, 'x-forwarded-proto'), ['https']);
});

t.test('a refused request counts and logs under the route its path matched', async (t) => {
  const res = await call(gw.url, '/readonly/x', { method: 'DELETE' });
  t.equal(res.status, 405);
  t.equal(res.headers.allow, 'GET');
  t.equal(await metricValue(gw.adminUrl, 'gateway_requests_total', { route: 'readonly', method: 'DELETE', status_class: '4xx' }), 1, '405 counted under its route');
  t.equal(await metricValue(gw.adminUrl, 'gateway_requests_total', { route: '_unrouted', method: 'DELETE' }), 0, 'not under _unrouted');

  const dup = await call(gw.url, '/readonly/y', { headers: { authorization: ['a', 'b'] } });
  t.equal(dup.status, 400);
  t.equal(await metricValue(gw.adminUrl, 'gateway_requests_total', { route: 'readonly', method: 'GET', status_class: '4xx' }), 1, 'a refused header counted under its route');
  const find = () => gw.logs.find((l) => l.msg === 'request completed' && l.path === '/readonly/x');
  await until(() => {
    gw.gateway.flushLogs();
    return find() !== undefined;
  }, 'the access line');
  t.equal(find()!.route, 'readonly', 'the access line names the route');
  t.equal(find()!.error, 'METHOD_NOT_ALLOWED');

  const unrouted = () => metricValue(gw.adminUrl, 'gateway_requests_total', { route: '_unrouted', method: 'GET', status_class: '4xx' });
  const before = await unrouted();
  t.equal((await call(gw.url, '/nowhere')).status, 404);
  t.equal(await unrouted(), before + 1, 'no route: _unrouted');
});

t.test('an error answered before the body arrived ends the connection and stops reading', async (t) => {
  const cases: [string, string, number][] = [
    ['no route', 'POST /nowhere HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n', 404],
    ['no credentials', 'POST /private/x HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n', 401],
    ['chunked body, bad credentials', 'POST /private/x HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer nope\r\nTransfer-Encoding: chunked\r\n\r\n3e8\r\n', 401],
    ['method not allowed', 'PUT /readonly/x HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n', 405],
  ];
  for (const [what, head, status] of cases) {
    const before = up.seen.length;
    const c = rawClient(gw.port);
    c.socket.write(head);
    c.socket.write('x'.repeat(1000));
    await until(() => c.text().includes('\r\n\r\n'), `${what}: the answer`);
    t.equal(statusOf(c.text()), status, `${what}: ${status}`);
    t.equal(headerOf(c.text(), 'connection'), 'close', `${what}: Connection: close`);
    // Without the close, Node would read and discard the rest of the ten megabytes, on a connection kept open.
    const closedByGateway = await Promise.race([c.closed.then(() => true), sleep(3000).then(() => false)]);
    t.ok(closedByGateway, `${what}: the gateway closed the connection without waiting for the rest of the body`);
    c.socket.destroy();
    t.equal(up.seen.length, before, `${what}: nothing reached the upstream`);
  }

  // A bodiless request's error keeps its connection.
  const c = rawClient(gw.port);
  c.socket.write('GET /nowhere HTTP/1.1\r\nHost: x\r\n\r\n');
  await until(() => c.text().includes('\r\n\r\n'), 'the 404');
  t.equal(headerOf(c.text(), 'connection'), 'keep-alive', 'a 404 without a body keeps the connection');
  c.socket.destroy();
});

t.test('connections that never send a byte are closed after firstByteTimeoutMs', async (t) => {
  const slow = await startUpstream(async (_req, res) => {
    await sleep(700);
    res.end('slow');
  });
  const idle = await startGateway({
    upstreams: { slow: { targets: [slow.url] } },
    policies: { limits: { firstByteTimeoutMs: 300, headersTimeoutMs: 2000 } },
    routes: [{ name: 'slow', match: { prefix: '/' }, upstream: 'slow' }],
  });
  t.teardown(async () => {
    await idle.close();
    await slow.close();
  });

  const start = Date.now();
  const silent = rawClient(idle.port);
  const partial = rawClient(idle.port);
  partial.socket.write('GET / HT');
  const out = await silent.closed;
  const took = Date.now() - start;
  t.equal(out, '', 'closed without an answer');
  t.ok(took >= 280 && took < 1000, `closed after about 300 ms (took ${took} ms)`);
  t.equal(partial.closedAt(), 0, 'a connection that has sent bytes is left to headersTimeoutMs');
  const partialOut = await partial.closed;
  t.equal(statusOf(partialOut), 408, 'which answers it 408 in time');

  // A request waiting longer than the silence allowance on its upstream is not cut.
  const busy = rawClient(idle.port);
  busy.socket.write('GET /a HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  const answer = await busy.closed;
  t.equal(statusOf(answer), 200, 'a slow answer arrives');
  t.ok(answer.endsWith('slow'));
});

t.test('firstByteTimeoutMs: 0 leaves silent connections to headersTimeoutMs', async (t) => {
  const off = await startGateway({
    upstreams: { up: { targets: [up.url] } },
    policies: { limits: { firstByteTimeoutMs: 0, headersTimeoutMs: 1000 } },
    routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }],
  });
  t.teardown(() => off.close());
  const start = Date.now();
  const silent = rawClient(off.port);
  const out = await silent.closed;
  t.ok(Date.now() - start >= 900, 'open until the head deadline');
  t.equal(statusOf(out), 408);
});

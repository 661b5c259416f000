import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import { connect, type AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { startGateway } from './helpers/gateway';
import { call } from './helpers/http';
import { startUpstream } from './helpers/upstream';

t.test('header hygiene in both directions, forwarded headers and Host', async (t) => {
  const up = await startUpstream((_req, res) => {
    res.writeHead(200, [
      'content-type', 'text/plain',
      'connection', 'X-Secret-Hop, keep-alive',
      'x-secret-hop', 'must not reach the client',
      'keep-alive', 'timeout=5',
      'proxy-authenticate', 'Basic',
      'upgrade', 'h2c',
      'x-request-id', 'upstream-made-this-up',
      'x-multi', 'a',
      'x-multi', 'b',
    ]);
    res.end('ok');
  });
  const gw = await startGateway({
    upstreams: { up: { targets: [up.url] } },
    routes: [
      { name: 'plain', match: { prefix: '/plain' }, upstream: 'up' },
      { name: 'keep', match: { prefix: '/keep' }, upstream: 'up', preserveHost: true },
    ],
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });

  const res = await call(gw.url, '/plain/x', {
    headers: {
      host: 'client.example',
      connection: 'keep-alive, X-Drop-Me',
      'x-drop-me': 'hop',
      'keep-alive': 'timeout=1',
      te: 'trailers',
      upgrade: 'websocket',
      'proxy-authorization': 'Basic Zm9vOmJhcg==',
      'proxy-connection': 'keep-alive',
      'x-forwarded-for': '6.6.6.6',
      'x-forwarded-proto': 'gopher',
      'x-forwarded-host': 'evil.example',
      forwarded: 'for=6.6.6.6',
      traceparent: '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01',
      tracestate: 'congo=t61rcWkgMzE',
      'x-custom': 'kept',
    },
  });
  t.equal(res.status, 200);
  const seen = up.seen.at(-1)!.headers;
  for (const h of ['x-drop-me', 'keep-alive', 'te', 'upgrade', 'proxy-authorization', 'proxy-connection', 'forwarded']) {
    t.notOk(h in seen, `request header ${h} stripped`);
  }
  t.equal(seen.connection, 'keep-alive', 'only the gateway\'s own hop header');
  t.equal(seen['x-custom'], 'kept');
  t.equal(seen.traceparent, '00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01', 'traceparent unchanged');
  t.equal(seen.tracestate, 'congo=t61rcWkgMzE', 'tracestate unchanged');
  t.equal(seen['x-forwarded-for'], '127.0.0.1', 'untrusted peer: forged X-Forwarded-For replaced');
  t.equal(seen['x-forwarded-proto'], 'http');
  t.equal(seen['x-forwarded-host'], 'client.example');
  t.equal(seen.host, new URL(up.url).host, 'Host rewritten to the target');

  for (const h of ['x-secret-hop', 'proxy-authenticate', 'upgrade']) t.notOk(h in res.headers, `response header ${h} stripped`);
  t.not(res.headers['keep-alive'], 'timeout=5', "the upstream's Keep-Alive stays on its hop (the gateway may send its own)");
  t.not(res.headers['x-request-id'], 'upstream-made-this-up', 'the gateway owns the request id');
  t.equal(res.headers['x-multi'], 'a, b', 'repeated response headers survive');
  t.equal(res.body, 'ok');

  await call(gw.url, '/keep/x', { headers: { host: 'client.example' } });
  t.equal(up.seen.at(-1)!.headers.host, 'client.example', 'preserveHost keeps the client Host');
});

t.test('trusted proxies: X-Forwarded-* appended, not replaced', async (t) => {
  const up = await startUpstream();
  const gw = await startGateway({
    trustedProxies: ['127.0.0.0/8'],
    upstreams: { up: { targets: [up.url] } },
    routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }],
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  await call(gw.url, '/x', { headers: { 'x-forwarded-for': '203.0.113.7', 'x-forwarded-proto': 'https', 'x-forwarded-host': 'api.example.com' } });
  const seen = up.seen.at(-1)!.headers;
  t.equal(seen['x-forwarded-for'], '203.0.113.7, 127.0.0.1');
  t.equal(seen['x-forwarded-proto'], 'https');
  t.equal(seen['x-forwarded-host'], 'api.example.com');
});

t.test('request ids: sane ones kept, others replaced; sent upstream, returned, logged', async (t) => {
  const up = await startUpstream();
  const gw = await startGateway({ upstreams: { up: { targets: [up.url] } }, routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }] });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const kept = await call(gw.url, '/a', { headers: { 'x-request-id': 'abc-123_X.y' } });
  t.equal(kept.headers['x-request-id'], 'abc-123_X.y');
  t.equal(up.seen.at(-1)!.headers['x-request-id'], 'abc-123_X.y');
  for (const bad of ['has space', 'a'.repeat(129), 'semi;colon', '<script>']) {
    const res = await call(gw.url, '/a', { headers: { 'x-request-id': bad } });
    t.not(res.headers['x-request-id'], bad);
    t.match(res.headers['x-request-id'], /^[0-9a-f-]{36}$/);
    t.equal(up.seen.at(-1)!.headers['x-request-id'], res.headers['x-request-id']);
  }
  gw.gateway.flushLogs();
  const access = gw.logs.filter((l) => l.msg === 'request completed');
  t.ok(access.some((l) => l.reqId === 'abc-123_X.y' && l.route === 'r' && l.status === 200 && typeof l.ms === 'number' && typeof l.upstreamMs === 'number'));
  const notFound = await startGateway({ routes: [] });
  const nf = await call(notFound.url, '/x', { headers: { 'x-request-id': 'trace-me' } });
  t.equal(nf.json().requestId, 'trace-me', 'error bodies carry the request id');
  await notFound.close();
});

t.test('round-robin over targets', async (t) => {
  const ups = await Promise.all([startUpstream(), startUpstream(), startUpstream()]);
  const gw = await startGateway({ upstreams: { up: { targets: ups.map((u) => u.url) } }, routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }] });
  t.teardown(async () => {
    await gw.close();
    await Promise.all(ups.map((u) => u.close()));
  });
  for (let i = 0; i < 30; i++) await call(gw.url, '/rr');
  t.same(ups.map((u) => u.seen.length), [10, 10, 10]);
});

t.test('upstream failures: refused → 502, slow headers → 504 in time, deadline → 504, never 500', async (t) => {
  const closed = await startUpstream();
  const deadUrl = closed.url;
  await closed.close();
  let slowReached = 0;
  const slow = await startUpstream(async (_req, res) => {
    slowReached = Date.now();
    await sleep(3000);
    if (!res.destroyed) res.end('late');
  });
  const dribble = await startUpstream(async (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    for (let i = 0; i < 50 && !res.destroyed; i++) {
      res.write('x');
      await sleep(100);
    }
    res.end();
  });
  const gw = await startGateway({
    upstreams: {
      dead: { targets: [deadUrl] },
      slow: { targets: [slow.url], timeouts: { headersMs: 300 } },
      dribble: { targets: [dribble.url], timeouts: { requestMs: 400 } },
    },
    routes: [
      { name: 'dead', match: { prefix: '/dead' }, upstream: 'dead' },
      { name: 'slow', match: { prefix: '/slow' }, upstream: 'slow' },
      { name: 'dribble', match: { prefix: '/dribble' }, upstream: 'dribble' },
    ],
  });
  t.teardown(async () => {
    await gw.close();
    await Promise.all([slow.close(), dribble.close()]);
  });

  const refused = await call(gw.url, '/dead');
  t.equal(refused.status, 502);
  t.equal(refused.json().code, 'UPSTREAM_CONNECT_FAILED');
  const post = await call(gw.url, '/dead', { method: 'POST', body: 'payload', headers: { 'content-type': 'text/plain' } });
  t.equal(post.status, 502, 'a POST with a body gets a clean 502 too');

  const started = Date.now();
  const timedOut = await call(gw.url, '/slow');
  const answered = Date.now();
  t.equal(timedOut.status, 504);
  t.equal(timedOut.json().code, 'UPSTREAM_TIMEOUT');
  // The timeout runs from the request sent upstream: after the client sent it, before the upstream saw it.
  t.ok(answered - started >= 300, `not before the setting (${answered - started} ms after the client sent)`);
  t.ok(answered - slowReached <= 350, `answered ${answered - slowReached} ms after the upstream got the request (headers timeout 300 ms: within 10 % + 20 ms)`);

  // The deadline hits after headers were sent: the client must see a broken response, not a short one.
  await t.rejects(call(gw.url, '/dribble'), /aborted|incomplete|socket hang up|ECONNRESET/);
  const metrics = await (await fetch(`${gw.adminUrl}/metrics`)).text();
  t.match(metrics, /gateway_requests_total\{route="dead",method="GET",code="502",status_class="5xx"\} 1/);
  t.notMatch(metrics, /status_class="5xx"\} .*\n.*INTERNAL/);
});

t.test('a body cut short by the upstream is never passed off as complete', async (t) => {
  const liar = await startUpstream((_req, res) => {
    res.writeHead(200, { 'content-length': '100', 'content-type': 'text/plain' });
    res.write('only part of it');
    setTimeout(() => res.socket?.destroy(), 50);
  });
  const chunky = await startUpstream((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('chunk one');
    setTimeout(() => res.socket?.destroy(), 50);
  });
  const gw = await startGateway({
    upstreams: { liar: { targets: [liar.url] }, chunky: { targets: [chunky.url] } },
    routes: [
      { name: 'liar', match: { prefix: '/liar' }, upstream: 'liar' },
      { name: 'chunky', match: { prefix: '/chunky' }, upstream: 'chunky' },
    ],
  });
  t.teardown(async () => {
    await gw.close();
    await Promise.all([liar.close(), chunky.close()]);
  });
  await t.rejects(call(gw.url, '/liar'), /aborted|incomplete|socket hang up|ECONNRESET/);
  await t.rejects(call(gw.url, '/chunky'), /aborted|incomplete|socket hang up|ECONNRESET/);
});

t.test('bodies stream both ways without buffering', async (t) => {
  const size = 8 * 1024 * 1024;
  const up = await startUpstream((_req, res, body) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream' });
    res.end(Buffer.alloc(size, body.length % 251));
  });
  const gw = await startGateway({ upstreams: { up: { targets: [up.url] } }, routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }] });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const payload = Buffer.alloc(3 * 1024 * 1024, 'a');
  const res = await call(gw.url, '/upload', { method: 'PUT', body: payload, headers: { 'content-type': 'application/octet-stream' } });
  t.equal(res.status, 200);
  t.equal(up.seen.at(-1)!.body.length, payload.length, 'upstream received the whole request body');
  t.equal(Buffer.byteLength(res.body, 'latin1'), size);

  // A chunked request (no Content-Length) streams through too.
  const port = (gw.gateway.server.server.address() as AddressInfo).port;
  const raw = await new Promise<string>((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => {
      s.write('POST /chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n');
    });
    let out = '';
    s.on('data', (d: Buffer) => (out += d.toString('latin1')));
    s.on('end', () => resolve(out));
    s.on('error', reject);
  });
  t.match(raw, /^HTTP\/1\.1 200/);
  t.equal(up.seen.at(-1)!.body, 'hello world');
});

t.test('HTTPS upstreams verify certificates by default; a CA file makes them trusted', async (t) => {
  const dir = mkdtempSync(join(tmpdir(), 'gw-tls-'));
  execFileSync('openssl', ['req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', join(dir, 'key.pem'), '-out', join(dir, 'cert.pem'), '-days', '1', '-subj', '/CN=localhost', '-addext', 'subjectAltName=DNS:localhost,IP:127.0.0.1'], { stdio: 'ignore' });
  const server = createHttpsServer({ key: readFileSync(join(dir, 'key.pem')), cert: readFileSync(join(dir, 'cert.pem')) }, (_req, res) => res.end('secure'));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
  writeFileSync(join(dir, 'unused'), '');
  const gw = await startGateway({
    upstreams: { strict: { targets: [url] }, trusted: { targets: [url], tls: { caFile: join(dir, 'cert.pem') } } },
    routes: [
      { name: 'strict', match: { prefix: '/strict' }, upstream: 'strict' },
      { name: 'trusted', match: { prefix: '/trusted' }, upstream: 'trusted' },
    ],
  });
  t.teardown(async () => {
    await gw.close();
    server.close();
  });
  const strict = await call(gw.url, '/strict');
  t.equal(strict.status, 502, 'self-signed certificate rejected');
  const trusted = await call(gw.url, '/trusted');
  t.equal(trusted.status, 200);
  t.equal(trusted.body, 'secure');
});

t.test('a client that hangs up mid-request aborts the upstream exchange', async (t) => {
  let upstreamClosed = false;
  const up = await startUpstream((_req, res) => {
    res.on('close', () => (upstreamClosed = true));
    res.writeHead(200);
    res.write('start');
  });
  const gw = await startGateway({ upstreams: { up: { targets: [up.url] } }, routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }] });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const s = connect(gw.port, '127.0.0.1', () => s.write('GET /hang HTTP/1.1\r\nHost: x\r\n\r\n'));
  await new Promise((r) => s.once('data', r));
  s.destroy();
  for (let i = 0; i < 40 && !upstreamClosed; i++) await sleep(25);
  t.ok(upstreamClosed, 'upstream connection released');
});

t.test('a response with Content-Length arrives whole over many chunks, HEAD gets its headers alone, and the client connection is reused', async (t) => {
  const size = 4 * 1024 * 1024;
  const up = await startUpstream((req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(size) });
    if (req.method === 'HEAD') return void res.end();
    const piece = Buffer.alloc(256 * 1024, 'z');
    let sent = 0;
    const push = (): void => {
      while (sent < size) {
        sent += piece.length;
        if (!res.write(piece)) return void res.once('drain', push);
      }
      res.end();
    };
    push();
  });
  const gw = await startGateway({ upstreams: { up: { targets: [up.url] } }, routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }] });
  const agent = new Agent({ keepAlive: true, maxSockets: 1 });
  t.teardown(async () => {
    agent.destroy();
    await gw.close();
    await up.close();
  });
  const port = (gw.gateway.server.server.address() as AddressInfo).port;
  const fetchOn = (method: string) =>
    new Promise<{ status: number; length: string | undefined; bytes: number; reused: boolean }>((resolve, reject) => {
      const req = request({ host: '127.0.0.1', port, path: '/big', method, agent }, (res) => {
        let bytes = 0;
        res.on('data', (c: Buffer) => (bytes += c.length));
        res.on('end', () => (res.complete ? resolve({ status: res.statusCode ?? 0, length: res.headers['content-length'], bytes, reused: req.reusedSocket }) : reject(new Error('incomplete'))));
        res.on('error', reject);
      });
      req.on('error', reject);
      req.end();
    });
  const a = await fetchOn('GET');
  t.same(a, { status: 200, length: String(size), bytes: size, reused: false }, 'every byte, as announced');
  const b = await fetchOn('HEAD');
  t.same(b, { status: 200, length: String(size), bytes: 0, reused: true }, 'HEAD: the length, no body, same connection');
  const c = await fetchOn('GET');
  t.same(c, { status: 200, length: String(size), bytes: size, reused: true }, 'and the connection still serves whole responses');
});

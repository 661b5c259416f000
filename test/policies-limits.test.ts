import { createServer, type IncomingMessage } from 'node:http';
import { connect, type AddressInfo, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { startFlakyUpstream } from './helpers/flaky-upstream';
import { startGateway, type TestGateway } from './helpers/gateway';
import { call } from './helpers/http';
import { startUpstream } from './helpers/upstream';

interface Seen {
  url: string;
  bytes: number;
  ended: boolean;
  aborted: boolean;
}

/** An upstream that reports what it received of each request body as it streams in. */
async function startRecorder(): Promise<{ url: string; seen: Seen[]; close(): Promise<void> }> {
  const seen: Seen[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((req: IncomingMessage, res) => {
    const entry: Seen = { url: req.url ?? '', bytes: 0, ended: false, aborted: false };
    seen.push(entry);
    req.on('data', (c: Buffer) => (entry.bytes += c.length));
    req.on('error', () => undefined);
    req.on('close', () => {
      if (!entry.ended) entry.aborted = true;
    });
    req.on('end', () => {
      entry.ended = true;
      res.end(`got ${entry.bytes}`);
    });
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    seen,
    close: () =>
      new Promise<void>((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

/** A raw client: write what the test says when it says it, read everything until the server closes. */
function rawClient(port: number): { socket: Socket; text: () => string; closed: Promise<string> } {
  const socket = connect(port, '127.0.0.1');
  let out = '';
  socket.on('data', (d: Buffer) => (out += d.toString('latin1')));
  const closed = new Promise<string>((resolve) => {
    socket.on('error', () => undefined);
    socket.on('close', () => resolve(out));
  });
  return { socket, text: () => out, closed };
}

async function until(cond: () => boolean, what: string, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(10);
  }
}

/** The access line of `path`, once the response has closed and the batched log is flushed. */
async function accessLine(gw: TestGateway, path: string): Promise<Record<string, unknown> | undefined> {
  const find = () => gw.logs.find((l) => l.msg === 'request completed' && l.path === path);
  for (let i = 0; i < 100 && !find(); i++) {
    gw.gateway.flushLogs();
    await sleep(10);
  }
  return find();
}

function problemOf(raw: string): Record<string, unknown> {
  return JSON.parse(raw.slice(raw.indexOf('\r\n\r\n') + 4)) as Record<string, unknown>;
}

t.test('request body limit: declared lengths refused up front, chunked bodies cut mid-stream', async (t) => {
  const up = await startRecorder();
  const gw = await startGateway({
    upstreams: { up: { targets: [up.url] } },
    policies: { limits: { maxBodyBytes: 1000 } },
    routes: [
      { name: 'limited', match: { prefix: '/limited' }, upstream: 'up' },
      { name: 'roomy', match: { prefix: '/roomy' }, upstream: 'up', policies: { limits: { maxBodyBytes: 5000 } } },
    ],
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });

  const ok = await call(gw.url, '/limited/a', { method: 'POST', body: 'x'.repeat(1000) });
  t.equal(ok.status, 200, 'exactly at the limit passes');
  t.equal(ok.body, 'got 1000');

  const big = await call(gw.url, '/limited/b', { method: 'POST', body: 'x'.repeat(1001) });
  t.equal(big.status, 413);
  t.equal(big.headers['content-type'], 'application/problem+json');
  t.equal(big.json().code, 'PAYLOAD_TOO_LARGE');
  t.equal(big.headers.connection, 'close', 'the unread body ends the connection');
  t.notOk(up.seen.some((s) => s.url === '/limited/b'), 'refused before the upstream was contacted');
  t.equal((await call(gw.url, '/roomy/c', { method: 'POST', body: 'x'.repeat(3000) })).status, 200, 'a route limit replaces the global one');

  // Chunked upload: the first 600 bytes stream through, the next 600 cross the limit.
  const c = rawClient(gw.port);
  c.socket.write('POST /limited/chunked HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nContent-Type: application/octet-stream\r\n\r\n');
  c.socket.write(`258\r\n${'a'.repeat(600)}\r\n`);
  await until(() => up.seen.some((s) => s.url === '/limited/chunked' && s.bytes === 600), 'the first chunk upstream');
  t.pass('the body streams to the upstream before it is complete (no buffering)');
  c.socket.write(`258\r\n${'b'.repeat(600)}\r\n`);
  const raw = await c.closed;
  t.match(raw, /^HTTP\/1\.1 413 /);
  t.match(raw, /connection: close/i);
  t.equal(problemOf(raw).code, 'PAYLOAD_TOO_LARGE');
  const seen = up.seen.find((s) => s.url === '/limited/chunked')!;
  await until(() => seen.aborted, 'the upstream to see the abort');
  t.notOk(seen.ended, 'the upstream never saw a complete request');
  t.equal(seen.bytes, 600, 'nothing past the limit was forwarded');

  const small = rawClient(gw.port);
  small.socket.write('POST /limited/small HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n5\r\nhello\r\n0\r\n\r\n');
  const smallRaw = await small.closed;
  t.match(smallRaw, /^HTTP\/1\.1 200 /, 'a chunked body within the limit passes');
  t.match(smallRaw, /got 5$/);
  const log = await accessLine(gw, '/limited/chunked');
  t.equal(log?.status, 413, 'access log has the 413');
  t.equal(log?.error, 'PAYLOAD_TOO_LARGE');
});

t.test('header size limit: 431 as problem+json', async (t) => {
  const up = await startUpstream();
  const gw = await startGateway({
    upstreams: { up: { targets: [up.url] } },
    policies: { limits: { maxHeaderBytes: 2048 } },
    routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }],
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  t.equal((await call(gw.url, '/x', { headers: { 'x-fill': 'a'.repeat(1500) } })).status, 200, 'under the limit');
  const c = rawClient(gw.port);
  c.socket.write(`GET /x HTTP/1.1\r\nHost: x\r\nX-Fill: ${'a'.repeat(3000)}\r\n\r\n`);
  const raw = await c.closed;
  t.match(raw, /^HTTP\/1\.1 431 Request Header Fields Too Large\r\n/);
  t.match(raw, /content-type: application\/problem\+json/);
  t.equal(problemOf(raw).code, 'HEADERS_TOO_LARGE');
  t.equal(problemOf(raw).status, 431);
  t.equal(up.seen.length, 1, 'the oversized request never reached the upstream');

  const bad = rawClient(gw.port);
  bad.socket.write('GET /x HTTP/1.1\r\nHost: x\r\nBad Header: y\r\n\r\n');
  const badRaw = await bad.closed;
  t.match(badRaw, /^HTTP\/1\.1 400 /, 'malformed requests get a problem too');
  t.equal(problemOf(badRaw).code, 'BAD_REQUEST');
});

t.test('client timeouts: slowloris and slow bodies are cut, slow upstreams are not', async (t) => {
  const up = await startRecorder();
  const slow = await startUpstream(async (_req, res) => {
    await sleep(1500);
    res.end('worth the wait');
  });
  const gw = await startGateway({
    upstreams: { up: { targets: [up.url] }, slow: { targets: [slow.url] } },
    policies: { limits: { headersTimeoutMs: 500, requestTimeoutMs: 1000 } },
    routes: [
      { name: 'r', match: { prefix: '/' }, upstream: 'up' },
      { name: 'slow', match: { prefix: '/slow' }, upstream: 'slow' },
    ],
  });
  t.teardown(async () => {
    await gw.close();
    await Promise.all([up.close(), slow.close()]);
  });

  // Slowloris: a header line every 100 ms, never finishing the head.
  const lori = rawClient(gw.port);
  lori.socket.write('GET /x HTTP/1.1\r\nHost: x\r\n');
  const drip = setInterval(() => lori.socket.writable && lori.socket.write('X-A: b\r\n'), 100);
  const started = Date.now();
  const loriRaw = await lori.closed;
  clearInterval(drip);
  const took = Date.now() - started;
  t.match(loriRaw, /^HTTP\/1\.1 408 /);
  t.equal(problemOf(loriRaw).code, 'REQUEST_TIMEOUT');
  t.ok(took >= 400 && took < 5000, `slowloris closed after ${took} ms (head timeout 500 ms)`);

  // Slow body: the head arrives, the body trickles in past the request timeout.
  const trickle = rawClient(gw.port);
  trickle.socket.write('POST /body HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n');
  const drop = setInterval(() => trickle.socket.writable && trickle.socket.write('x'), 100);
  const trickleRaw = await trickle.closed;
  clearInterval(drop);
  t.match(trickleRaw, /^HTTP\/1\.1 408 /);
  t.match(trickleRaw, /content-type: application\/problem\+json/);
  t.equal(problemOf(trickleRaw).code, 'REQUEST_TIMEOUT');
  const seen = up.seen.find((s) => s.url === '/body');
  t.ok(seen, 'the request was on its way upstream when the client stalled');
  await until(() => seen!.aborted || seen!.ended, 'the upstream to hear of it');
  t.notOk(seen!.ended, 'the upstream saw an aborted body, not a complete one');
  const log = await accessLine(gw, '/body');
  t.equal(log?.status, 408, 'the timed-out request is logged with its 408');

  // A request received in time waits for a slow upstream as long as the upstream timeouts allow.
  const res = await call(gw.url, '/slow/x');
  t.equal(res.status, 200);
  t.equal(res.body, 'worth the wait');

  // An idle keep-alive connection is not a slow request.
  const ka = rawClient(gw.port);
  ka.socket.write('GET /one HTTP/1.1\r\nHost: x\r\n\r\n');
  await until(() => ka.text().includes('got 0'), 'the first answer');
  await sleep(1300);
  ka.socket.write('GET /two HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n');
  const kaRaw = await ka.closed;
  t.equal(kaRaw.match(/HTTP\/1\.1 200 /g)?.length, 2, 'both requests answered on one connection');
});

t.test('a body cut for its size says nothing about the health of the target', async (t) => {
  const up = await startFlakyUpstream();
  const TOKEN = 'admin-token-0123456789';
  const gw = await startGateway({
    admin: { token: TOKEN },
    log: { level: 'warn' },
    upstreams: {
      up: { targets: [up.url], breaker: { consecutiveFailures: 3, failureRatio: 0, openMs: 300, halfOpenProbes: 1 }, retries: { maxRetries: 0 } },
    },
    routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up', policies: { limits: { maxBodyBytes: 100 } } }],
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const breaker = async () =>
    (await call(gw.adminUrl, '/admin/upstreams', { headers: { authorization: `Bearer ${TOKEN}` } })).json<{ upstreams: { targets: { breaker: string }[] }[] }>()
      .upstreams[0].targets[0].breaker;

  up.behave({ kind: 'status', status: 503 });
  for (let i = 0; i < 3; i++) await call(gw.url, '/x');
  t.equal(await breaker(), 'open');
  await sleep(350);
  up.behave({ kind: 'hang' });
  // The half-open probe is an upload that crosses the limit: the gateway cuts it, the target never answers.
  const c = rawClient(gw.port);
  c.socket.write(`POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n40\r\n${'a'.repeat(64)}\r\n`);
  // Long enough for the request to be under way to the target before the limit is crossed.
  await sleep(300);
  c.socket.write(`40\r\n${'b'.repeat(64)}\r\n`);
  t.match(await c.closed, /^HTTP\/1\.1 413 /);
  t.equal(await breaker(), 'half-open', 'not closed: the target has not answered anything yet');
});

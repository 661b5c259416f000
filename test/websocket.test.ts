import { randomBytes } from 'node:crypto';
import { once } from 'node:events';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { connect, createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import WebSocket, { WebSocketServer } from 'ws';
import { bytes, mint, now, rawExchange } from './helpers/auth';
import { startGateway, type TestConfig } from './helpers/gateway';
import { call } from './helpers/http';
import { metricValue } from './helpers/metrics';
import { startUpstream } from './helpers/upstream';

interface WsUpstream {
  url: string;
  /** Heads of the upgrade requests that reached it. */
  seen: IncomingMessage[];
  /** Close codes the upstream received from the gateway side. */
  closes: number[];
  /** Messages it received, as text. */
  messages: string[];
  wss: WebSocketServer;
  close(): Promise<void>;
}

/**
 * A real WebSocket upstream (the ws package): echoes every message, picks the first subprotocol
 * offered, negotiates permessage-deflate. /refuse answers the upgrade with a plain 403; /silent
 * never answers it.
 */
async function startWsUpstream(): Promise<WsUpstream> {
  const seen: IncomingMessage[] = [];
  const closes: number[] = [];
  const messages: string[] = [];
  const server: Server = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'cache-control': 'max-age=60', 'content-length': 5 });
    res.end('plain');
  });
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: true, handleProtocols: (protocols) => [...protocols][0] ?? false });
  server.on('upgrade', (req: IncomingMessage, socket: Socket, head: Buffer) => {
    seen.push(req);
    if (req.url?.startsWith('/refuse')) {
      socket.end('HTTP/1.1 403 Forbidden\r\ncontent-type: text/plain\r\ncontent-length: 9\r\nconnection: close\r\n\r\nno thanks');
      return;
    }
    if (req.url?.startsWith('/silent')) return;
    wss.handleUpgrade(req, socket, head, (ws) => {
      ws.on('message', (data) => messages.push(String(data)));
      ws.on('message', (data, isBinary) => ws.send(isBinary ? data : `echo:${String(data)}`, { binary: isBinary }));
      ws.on('close', (code) => closes.push(code));
    });
  });
  // Upgraded sockets are no longer the HTTP server's: closing it needs them gone first.
  const sockets = new Set<Socket>();
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  const port = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${port}`,
    seen,
    closes,
    messages,
    wss,
    close: async () => {
      for (const c of wss.clients) c.terminate();
      wss.close();
      for (const s of sockets) s.destroy();
      await new Promise((r) => server.close(r));
    },
  };
}

/** Opens a client WebSocket; resolves once open, or with the HTTP answer when the upgrade was refused. */
function open(url: string, opts: { protocols?: string[]; headers?: Record<string, string>; deflate?: boolean } = {}): Promise<
  { ws: WebSocket; res: IncomingMessage } | { refused: IncomingMessage; body: string }
> {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, opts.protocols ?? [], { headers: opts.headers, perMessageDeflate: opts.deflate ?? false });
    ws.on('upgrade', (res) => ws.once('open', () => resolve({ ws, res })));
    ws.on('unexpected-response', (_req, res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ refused: res, body }));
    });
    ws.on('error', reject);
  });
}

async function opened(url: string, opts: Parameters<typeof open>[1] = {}): Promise<{ ws: WebSocket; res: IncomingMessage }> {
  const r = await open(url, opts);
  if ('refused' in r) throw new Error(`upgrade refused: ${r.refused.statusCode} ${r.body}`);
  return r;
}

async function refused(url: string, opts: Parameters<typeof open>[1] = {}): Promise<{ status: number; headers: IncomingMessage['headers']; body: Record<string, unknown> | string }> {
  const r = await open(url, opts);
  if (!('refused' in r)) {
    r.ws.terminate();
    throw new Error('upgrade unexpectedly accepted');
  }
  let body: Record<string, unknown> | string = r.body;
  try {
    body = JSON.parse(r.body) as Record<string, unknown>;
  } catch {
    // the upstream's own answer: text
  }
  return { status: r.refused.statusCode ?? 0, headers: r.refused.headers, body };
}

function echo(ws: WebSocket, data: string | Buffer): Promise<WebSocket.RawData> {
  return new Promise((resolve) => {
    ws.once('message', (d) => resolve(d));
    ws.send(data);
  });
}

const closed = (ws: WebSocket): Promise<number> => new Promise((resolve) => ws.once('close', (code) => resolve(code)));

const wsUrl = (httpUrl: string, path: string) => httpUrl.replace(/^http/, 'ws') + path;

async function setup(t: Test, routes: TestConfig['routes'], extra: TestConfig = {}) {
  const up = await startWsUpstream();
  const gw = await startGateway({ upstreams: { up: { targets: [up.url] } }, routes, ...extra });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  return { up, gw, ws: (path: string) => wsUrl(gw.url, path) };
}

t.test('frames flow both ways through the gateway; subprotocol and permessage-deflate are negotiated end to end', async (t) => {
  const { up, gw, ws: url } = await setup(t, [{ name: 'chat', match: { prefix: '/chat' }, upstream: 'up', rewrite: { replacePrefix: '/v2' } }]);
  const { ws, res } = await opened(url('/chat/room?x=1'), { protocols: ['chat.v2', 'chat.v1'], deflate: true, headers: { 'x-custom': 'yes' } });
  t.equal(res.statusCode, 101);
  t.equal(ws.protocol, 'chat.v2', 'the upstream picked the subprotocol');
  t.match(ws.extensions, /permessage-deflate/, 'compression negotiated with the upstream');
  t.match(res.headers['x-request-id'], /.+/);
  t.equal(String(await echo(ws, 'hello')), 'echo:hello');
  // Random bytes: compression cannot shrink them, so the byte counters below see them all.
  const big = randomBytes(200_000);
  const back = (await echo(ws, big)) as Buffer;
  t.ok(Buffer.compare(back, big) === 0, 'a 200 kB binary message comes back intact');
  // One message in two frames, and a ping (a control frame, no message) before its last frame.
  const pieced = new Promise<WebSocket.RawData>((resolve) => ws.once('message', (d) => resolve(d)));
  ws.send('frag', { fin: false });
  ws.ping();
  ws.send('mented', { fin: true });
  t.equal(String(await pieced), 'echo:fragmented', 'a fragmented message arrives whole');

  const head = up.seen[0];
  t.equal(head.url, '/v2/room?x=1', 'the route rewrite applies');
  t.equal(head.headers['sec-websocket-protocol'], 'chat.v2,chat.v1');
  t.match(head.headers['sec-websocket-extensions'], /permessage-deflate/);
  t.equal(head.headers['x-custom'], 'yes');
  t.equal(head.headers['x-forwarded-for'], '127.0.0.1');
  t.equal(head.headers['x-request-id'], res.headers['x-request-id']);
  t.equal(head.headers.host, new URL(up.url).host);

  t.equal(await metricValue(gw.adminUrl, 'gateway_websocket_connections', { route: 'chat' }), 1);
  ws.close(1000);
  t.equal(await closed(ws), 1000);
  await sleep(50);
  t.equal(await metricValue(gw.adminUrl, 'gateway_websocket_connections', { route: 'chat' }), 0, 'the gauge goes down on close');
  t.equal(await metricValue(gw.adminUrl, 'gateway_websocket_upgrades_total', { route: 'chat', result: 'upgraded' }), 1);
  t.ok((await metricValue(gw.adminUrl, 'gateway_websocket_bytes_total', { route: 'chat', direction: 'to_upstream' })) > 200_000, 'bytes sent are counted');
  t.ok((await metricValue(gw.adminUrl, 'gateway_websocket_bytes_total', { route: 'chat', direction: 'to_client' })) > 200_000, 'bytes received are counted');
  t.equal(await metricValue(gw.adminUrl, 'gateway_websocket_messages_total', { route: 'chat', direction: 'to_upstream' }), 3, 'messages sent, not frames');
  t.equal(await metricValue(gw.adminUrl, 'gateway_websocket_messages_total', { route: 'chat', direction: 'to_client' }), 3, 'messages received');
  t.equal(await metricValue(gw.adminUrl, 'gateway_requests_total', { route: 'chat', status_class: '1xx' }), 1, 'the upgrade is a request of the route');
  gw.gateway.flushLogs();
  await sleep(20);
  t.match(
    gw.logs.find((l) => l.msg === 'request completed'),
    { status: 101, route: 'chat', method: 'GET', path: '/chat/room', reqId: res.headers['x-request-id'] },
    'the upgrade has its access line',
  );
});

t.test('an upgrade on a cached route reaches the upstream, even with a fresh entry for its path', async (t) => {
  const { ws: url, gw } = await setup(t, [{ name: 'cached', match: { prefix: '/cached' }, upstream: 'up', cache: {} }]);
  await call(gw.url, '/cached');
  const hit = await call(gw.url, '/cached');
  t.equal(hit.headers['x-cache'], 'HIT', 'a plain GET is answered from the cache');
  const { ws } = await opened(url('/cached'));
  t.equal(String(await echo(ws, 'live')), 'echo:live');
  ws.terminate();
});

t.test('a route that disables upgrades answers 400 WEBSOCKET_NOT_ALLOWED, never a plain 200', async (t) => {
  const { up, gw, ws: url } = await setup(t, [{ name: 'nows', match: { prefix: '/nows' }, upstream: 'up', websocket: { enabled: false } }]);
  const r = await refused(url('/nows'));
  t.equal(r.status, 400);
  t.match(r.body, { code: 'WEBSOCKET_NOT_ALLOWED' });
  t.equal(up.seen.length, 0);
  t.equal(await metricValue(gw.adminUrl, 'gateway_websocket_upgrades_total', { route: 'nows', result: 'not_allowed' }), 1);
  const unknown = await refused(url('/nowhere'));
  t.equal(unknown.status, 404, 'an upgrade that matches no route is 404');
});

t.test('authentication runs on the upgrade: 401 without a token, a WebSocket with one', async (t) => {
  const SECRET = 'websocket-test-secret-long-enough-0123456789';
  const { up, gw, ws: url } = await setup(t, [{ name: 'private', match: { prefix: '/private' }, upstream: 'up', auth: { methods: ['jwt'] } }], {
    auth: { jwt: { algorithms: ['HS256'], secret: SECRET } },
  });
  const denied = await refused(url('/private'));
  t.equal(denied.status, 401);
  t.match(denied.body, { code: 'UNAUTHENTICATED' });
  t.ok(denied.headers['www-authenticate']);
  t.equal(up.seen.length, 0, 'the upstream never sees an unauthenticated upgrade');
  t.equal(await metricValue(gw.adminUrl, 'gateway_websocket_upgrades_total', { route: 'private', result: 'refused' }), 1);
  t.equal(await metricValue(gw.adminUrl, 'gateway_requests_total', { route: 'private', status_class: '4xx' }), 1);
  const token = await mint({ sub: 'user-1', exp: now() + 60 }, bytes(SECRET));
  const { ws } = await opened(url('/private'), { headers: { authorization: `Bearer ${token}` } });
  t.equal(String(await echo(ws, 'hi')), 'echo:hi');
  t.equal(up.seen[0].headers['x-consumer-id'], 'user-1', 'the identity headers of the auth step reach the upstream');
  ws.terminate();
});

t.test('each upgrade takes a rate-limit token: the third of two per hour is 429', async (t) => {
  const { ws: url } = await setup(t, [{ name: 'rl', match: { prefix: '/rl' }, upstream: 'up', rateLimit: { limits: [{ rate: 2, per: '1h' }] } }]);
  const a = await opened(url('/rl'));
  const b = await opened(url('/rl'));
  const c = await refused(url('/rl'));
  t.equal(c.status, 429);
  t.match(c.body, { code: 'RATE_LIMITED' });
  t.ok(c.headers['retry-after']);
  a.ws.terminate();
  b.ws.terminate();
});

t.test('CORS: an origin the route does not allow cannot open a WebSocket (browsers do not check it)', async (t) => {
  const { ws: url } = await setup(t, [{ name: 'c', match: { prefix: '/c' }, upstream: 'up', policies: { cors: { origins: ['https://app.example.com'] } } }]);
  const bad = await refused(url('/c'), { headers: { origin: 'https://evil.example.com' } });
  t.equal(bad.status, 403);
  t.match(bad.body, { code: 'FORBIDDEN' });
  const { ws } = await opened(url('/c'), { headers: { origin: 'https://app.example.com' } });
  t.equal(String(await echo(ws, 'x')), 'echo:x');
  ws.terminate();
});

t.test('maxConnections: past it 503 with Retry-After; a slot frees when a WebSocket closes', async (t) => {
  const { gw, ws: url } = await setup(t, [{ name: 'one', match: { prefix: '/one' }, upstream: 'up', websocket: { maxConnections: 1 } }]);
  const first = await opened(url('/one'));
  const second = await refused(url('/one'));
  t.equal(second.status, 503);
  t.match(second.body, { code: 'WEBSOCKET_LIMIT' });
  t.equal(second.headers['retry-after'], '1');
  first.ws.close();
  await closed(first.ws);
  await sleep(50);
  const third = await opened(url('/one'));
  t.equal(String(await echo(third.ws, 'again')), 'echo:again');
  third.ws.terminate();
  t.equal(await metricValue(gw.adminUrl, 'gateway_websocket_upgrades_total', { route: 'one', result: 'limited' }), 1);
});

t.test('idle timeout and maximum lifetime close the WebSocket with 1001 on both sides', async (t) => {
  const { up, ws: url } = await setup(t, [
    { name: 'idle', match: { prefix: '/idle' }, upstream: 'up', websocket: { idleTimeoutMs: 300 } },
    { name: 'short', match: { prefix: '/short' }, upstream: 'up', websocket: { maxLifetimeMs: 400, idleTimeoutMs: 0 } },
  ]);
  const { ws } = await opened(url('/idle'));
  // Traffic keeps it open past the idle timeout...
  for (let i = 0; i < 4; i++) {
    await sleep(150);
    t.equal(String(await echo(ws, `m${i}`)), `echo:m${i}`);
  }
  // ...silence closes it.
  const started = Date.now();
  t.equal(await closed(ws), 1001);
  t.ok(Date.now() - started < 2000);
  await sleep(50);
  t.same(up.closes, [1001], 'the upstream got the close frame too (masked, or ws would have failed it with 1002)');

  const life = await opened(url('/short'));
  const ticking = setInterval(() => life.ws.send('tick'), 50);
  t.equal(await closed(life.ws), 1001, 'a busy WebSocket still ends at its maximum lifetime');
  clearInterval(ticking);
});

t.test('the upstream: refusing the upgrade, down, unroutable, silent', async (t) => {
  const up = await startWsUpstream();
  const dead = createNetServer();
  dead.listen(0, '127.0.0.1');
  await once(dead, 'listening');
  const deadPort = (dead.address() as AddressInfo).port;
  await new Promise((r) => dead.close(r));
  const gw = await startGateway({
    upstreams: {
      up: { targets: [up.url] },
      down: { targets: [`http://127.0.0.1:${deadPort}`], breaker: { consecutiveFailures: 1, openMs: 30000 } },
    },
    routes: [
      { name: 'up', match: { prefix: '/' }, upstream: 'up', websocket: { handshakeTimeoutMs: 300 } },
      { name: 'down', match: { prefix: '/down' }, upstream: 'down' },
    ],
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const no = await refused(wsUrl(gw.url, '/refuse'));
  t.equal(no.status, 403, "the upstream's own refusal reaches the client");
  t.equal(no.body, 'no thanks');
  t.match(no.headers['x-request-id'], /.+/);

  const failed = await refused(wsUrl(gw.url, '/down'));
  t.equal(failed.status, 502);
  t.match(failed.body, { code: 'UPSTREAM_CONNECT_FAILED' });
  const unroutable = await refused(wsUrl(gw.url, '/down'));
  t.equal(unroutable.status, 503, 'the breaker opened: no target takes traffic');
  t.match(unroutable.body, { code: 'UPSTREAM_UNAVAILABLE' });
  t.ok(Number(unroutable.headers['retry-after']) >= 1);

  const started = Date.now();
  const silent = await refused(wsUrl(gw.url, '/silent'));
  t.equal(silent.status, 504, 'an upstream that never answers the upgrade');
  t.match(silent.body, { code: 'UPSTREAM_TIMEOUT' });
  t.ok(Date.now() - started < 2000);
  t.equal(await metricValue(gw.adminUrl, 'gateway_websocket_upgrades_total', { route: 'down', result: 'unavailable' }), 1);
  t.equal(await metricValue(gw.adminUrl, 'gateway_websocket_upgrades_total', { route: 'up', result: 'upstream_refused' }), 1);
});

t.test('an Upgrade to another protocol (h2c) is ignored: the request goes through as plain HTTP/1.1', async (t) => {
  const up = await startUpstream();
  const gw = await startGateway({ upstreams: { up: { targets: [up.url] } }, routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }] });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const answer = await rawExchange(
    gw.port,
    'GET /h2c HTTP/1.1\r\nHost: x\r\nConnection: Upgrade, HTTP2-Settings\r\nUpgrade: h2c\r\nHTTP2-Settings: AAMAAABkAARAAAAAAAIAAAAA\r\n\r\n',
  );
  t.match(answer, /^HTTP\/1\.1 200 /);
  t.equal(up.seen.length, 1);
  t.equal(up.seen[0].headers.upgrade, undefined, 'Upgrade is hop-by-hop: never forwarded');
  const withBody = await rawExchange(gw.port, 'POST /h2c HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: h2c\r\nContent-Length: 2\r\n\r\nhi');
  t.match(withBody, /^HTTP\/1\.1 400 /);
  t.equal(up.seen.length, 1);
});

t.test('drain: open WebSockets get 1001 Going Away and shutdown does not wait on them', async (t) => {
  const up = await startWsUpstream();
  const gw = await startGateway({ upstreams: { up: { targets: [up.url] } }, routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }], shutdown: { drainDelayMs: 200 } });
  t.teardown(() => up.close());
  const a = await opened(wsUrl(gw.url, '/a'));
  const b = await opened(wsUrl(gw.url, '/b'));
  const codes = Promise.all([closed(a.ws), closed(b.ws)]);
  const started = Date.now();
  await gw.gateway.shutdown();
  const took = Date.now() - started;
  t.same(await codes, [1001, 1001]);
  t.ok(took >= 200, 'the WebSockets stay open through the drain delay');
  t.ok(took < 2500, `shutdown took ${took} ms`);
  await sleep(50);
  t.same(up.closes, [1001, 1001], 'the upstream is told too');
});

t.test('a close from the middle waits for the frame in flight: the message arrives whole, then 1001', async (t) => {
  const up = await startWsUpstream();
  const gw = await startGateway({ upstreams: { up: { targets: [up.url] } }, routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }] });
  t.teardown(() => up.close());
  // A hand-made client, to stop in the middle of a frame.
  const sock = connect(gw.port, '127.0.0.1');
  await once(sock, 'connect');
  sock.write('GET /raw HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\r\n');
  let received = Buffer.alloc(0);
  sock.on('data', (d: Buffer) => (received = Buffer.concat([received, d])));
  while (!received.includes('\r\n\r\n')) await sleep(10);
  t.match(received.toString('latin1'), /^HTTP\/1\.1 101 /);
  received = Buffer.alloc(0);
  const payload = Buffer.from('x'.repeat(100));
  const mask = Buffer.from([1, 2, 3, 4]);
  const masked = Buffer.from(payload.map((b, i) => b ^ mask[i % 4]));
  const frame = Buffer.concat([Buffer.from([0x81, 0x80 | payload.length]), mask, masked]);
  sock.write(frame.subarray(0, 30));
  await sleep(100);
  const closing = gw.gateway.close();
  await sleep(100);
  sock.write(frame.subarray(30));
  await closing;
  await sleep(50);
  t.same(up.messages, ['x'.repeat(100)], 'the upstream got the whole message');
  t.same(up.closes, [1001], 'and then the close frame');
  t.same([...received.subarray(0, 4)], [0x88, 0x02, 0x03, 0xe9], 'the client got 1001 unmasked');
  sock.destroy();
});

t.test("the listener's request deadlines do not apply to an open WebSocket", async (t) => {
  const { ws: url } = await setup(t, [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }], {
    policies: { limits: { headersTimeoutMs: 400, requestTimeoutMs: 400 } },
  });
  const { ws } = await opened(url('/long'));
  let closedEarly = false;
  ws.on('close', () => (closedEarly = true));
  for (let i = 0; i < 6; i++) {
    await sleep(250);
    t.equal(String(await echo(ws, `m${i}`)), `echo:m${i}`);
  }
  t.notOk(closedEarly, 'still open at 1.5 s, past the 400 ms request deadline');
  ws.terminate();
});

t.test('a target that refuses the connection is skipped: the upgrade goes to the next one', async (t) => {
  const up = await startWsUpstream();
  const dead = createNetServer();
  dead.listen(0, '127.0.0.1');
  await once(dead, 'listening');
  const deadPort = (dead.address() as AddressInfo).port;
  await new Promise((r) => dead.close(r));
  const gw = await startGateway({
    upstreams: { two: { targets: [`http://127.0.0.1:${deadPort}`, up.url] } },
    routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'two' }],
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  for (let i = 0; i < 2; i++) {
    const { ws } = await opened(wsUrl(gw.url, `/n${i}`));
    t.equal(String(await echo(ws, `m${i}`)), `echo:m${i}`);
    ws.terminate();
  }
  t.equal(up.seen.length, 2);
});

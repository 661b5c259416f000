import { createServer, type Server } from 'node:http';
import { connect, createServer as createTcpServer, type AddressInfo, type Socket } from 'node:net';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { startGateway } from './helpers/gateway';
import { call } from './helpers/http';
import { metricValue } from './helpers/metrics';

interface IdleClosingUpstream {
  url: string;
  served: number;
  /** Requests that arrived on a connection the server had already decided to close. */
  killed: number;
  /** Every request that reached the server (served or killed), as "METHOD /path". */
  received: string[];
  close(): Promise<void>;
}

/**
 * An upstream with server.keepAliveTimeout = `idleMs` that does not announce it (no Keep-Alive:
 * timeout hint, like many servers and load balancers), so the gateway's pool cannot know. Node 20
 * closes such sockets idleMs + 1 s after the last response. With `race: true` it instead loses
 * every race on purpose: a request that arrives on a connection idle for `idleMs` or more is
 * dropped unanswered, exactly what the client sees when its request crosses the server's FIN.
 */
async function startIdleClosingUpstream(idleMs: number, race: boolean): Promise<IdleClosingUpstream> {
  const lastDone = new WeakMap<Socket, number>();
  const sockets = new Set<Socket>();
  const u = { url: '', served: 0, killed: 0, received: [] as string[], close: async () => undefined as void };
  const server: Server = createServer((req, res) => {
    u.received.push(`${req.method} ${req.url}`);
    const idleSince = lastDone.get(req.socket);
    if (race && idleSince !== undefined && Date.now() - idleSince >= idleMs) {
      u.killed++;
      req.socket.destroy();
      return;
    }
    req.resume();
    req.on('end', () => {
      u.served++;
      const body = `served ${req.method} ${req.url}`;
      // An explicit Connection header keeps Node from adding "Keep-Alive: timeout=...".
      res.writeHead(200, { 'content-type': 'text/plain', 'content-length': Buffer.byteLength(body), connection: 'keep-alive' });
      res.end(body, () => lastDone.set(req.socket, Date.now()));
    });
  });
  server.keepAliveTimeout = race ? 60000 : idleMs;
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  u.url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  u.close = () =>
    new Promise<void>((resolve) => {
      for (const s of sockets) s.destroy();
      server.close(() => resolve());
    });
  return u;
}

/**
 * A TCP relay that delays every byte, FIN and reset by `delayMs` each way: the network latency
 * that turns an upstream's idle close into a real race (on bare loopback the gateway sees the FIN
 * before it could ever reuse the socket).
 */
async function startLatencyProxy(target: string, delayMs: number): Promise<{ url: string; close(): Promise<void> }> {
  const { hostname, port } = new URL(target);
  const sockets = new Set<Socket>();
  const later = (fn: () => void) => setTimeout(fn, delayMs);
  const server = createTcpServer((client) => {
    const upstream = connect(Number(port), hostname);
    for (const [from, to] of [
      [client, upstream],
      [upstream, client],
    ] as const) {
      sockets.add(from);
      from.on('data', (chunk) => later(() => to.destroyed || to.write(chunk)));
      from.on('end', () => later(() => to.end()));
      from.on('error', () => later(() => to.resetAndDestroy()));
      from.on('close', () => sockets.delete(from));
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

t.test('an upstream closing idle keep-alive sockets (keepAliveTimeout = 1000): zero 502s over hundreds of spaced requests', async (t) => {
  const up = await startIdleClosingUpstream(1000, false);
  const wire = await startLatencyProxy(up.url, 15);
  // One upstream (so one pool) per client: each connection idles for exactly the client's pause.
  const clients = 30;
  const names = Array.from({ length: clients }, (_, c) => `u${c}`);
  const gw = await startGateway({
    log: { level: 'warn' },
    // Methods that may be sent twice (DELETE declared so): a POST is never replayed (next test).
    upstreams: Object.fromEntries(names.map((n) => [n, { targets: [wire.url], retries: { methods: ['GET', 'HEAD', 'OPTIONS', 'DELETE'] } }])),
    routes: names.map((n) => ({ name: n, match: { prefix: `/${n}` }, upstream: n })),
  });
  t.teardown(async () => {
    await gw.close();
    await wire.close();
    await up.close();
  });
  const statuses = new Map<number, number>();
  // Pauses around the moment Node closes the idle socket (keepAliveTimeout + its 1 s buffer): with
  // 15 ms of latency each way, a request sent within about 30 ms of the close crosses the FIN.
  await Promise.all(
    names.map(async (n, c) => {
      await sleep(c * 30);
      for (let i = 0; i < 10; i++) {
        const method = ['GET', 'HEAD', 'DELETE', 'OPTIONS'][i % 4];
        const res = await call(gw.url, `/${n}/${i}`, { method });
        statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
        await sleep(1900 + Math.random() * 200);
      }
    }),
  );
  const raced = await metricValue(gw.adminUrl, 'gateway_upstream_retries_total', { cause: 'stale-connection' });
  t.same([...statuses.entries()], [[200, clients * 10]], `all ${clients * 10} answered 200`);
  t.ok(raced > 0, `the race happened and was absorbed: ${raced} requests met a closing connection and were retried`);
  t.equal(up.served, clients * 10);
});

t.test('a request that loses the idle-socket race is retried once on a fresh connection when its method may be retried; others are never sent twice', async (t) => {
  const up = await startIdleClosingUpstream(300, true);
  const gw = await startGateway({
    log: { level: 'warn' },
    // A breaker that trips on the first failure shows the race is not blamed on the target.
    upstreams: { up: { targets: [up.url], breaker: { consecutiveFailures: 1 }, retries: { maxRetries: 0 } } },
    routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }],
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const methods = ['GET', 'POST', 'DELETE', 'PUT', 'PATCH', 'OPTIONS', 'HEAD'];
  const retried = ['GET', 'OPTIONS', 'HEAD'];
  for (const method of methods) {
    // A connection used just now, then left idle past the upstream's limit: the next request loses the race.
    t.equal((await call(gw.url, '/warm')).status, 200);
    await sleep(350);
    const res = await call(gw.url, `/${method}`, { method });
    const received = up.received.filter((r) => r === `${method} /${method}`).length;
    if (retried.includes(method)) {
      t.equal(res.status, 200, `${method} answered`);
      if (method !== 'HEAD') t.equal(res.body, `served ${method} /${method}`);
      t.equal(received, 2, `${method} sent again on a fresh connection`);
    } else {
      t.equal(res.status, 502, `${method} lost the race and is not sent again`);
      t.equal(res.json().code, 'UPSTREAM_RESET');
      t.equal(received, 1, `${method} reached the upstream once`);
    }
  }
  t.equal(up.killed, methods.length, 'every tested request met a connection the upstream had given up');
  t.equal(await metricValue(gw.adminUrl, 'gateway_upstream_retries_total', { cause: 'stale-connection' }), retried.length);
  t.equal(await metricValue(gw.adminUrl, 'gateway_upstream_breaker_state', { upstream: 'up' }), 0, 'the breaker stayed closed');
});

t.test('without the stale-connection retry the race shows as 502s; a pool idle timeout below the upstream\'s avoids it', async (t) => {
  const up = await startIdleClosingUpstream(300, true);
  const gw = await startGateway({
    log: { level: 'warn' },
    upstreams: {
      noRetry: { targets: [up.url], retries: { staleConnection: false, maxRetries: 0 } },
      shortIdle: { targets: [up.url], pool: { keepAliveTimeoutMs: 200 } },
    },
    routes: [
      { name: 'a', match: { prefix: '/a' }, upstream: 'noRetry' },
      { name: 'b', match: { prefix: '/b' }, upstream: 'shortIdle' },
    ],
  });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  t.equal((await call(gw.url, '/a/1')).status, 200);
  await sleep(350);
  const res = await call(gw.url, '/a/2');
  t.equal(res.status, 502, 'the race is real: a spurious 502 without the retry');
  t.equal(res.json().code, 'UPSTREAM_RESET');

  const killed = up.killed;
  for (let i = 0; i < 4; i++) {
    t.equal((await call(gw.url, `/b/${i}`)).status, 200);
    await sleep(350);
  }
  t.equal(up.killed, killed, 'the pool dropped its idle connections before the upstream would have');
  t.equal(await metricValue(gw.adminUrl, 'gateway_upstream_retries_total', { upstream: 'shortIdle' }), 0);
});

import { mkdtempSync, writeFileSync } from 'node:fs';
import { Agent, request } from 'node:http';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import t from 'tap';
import { runInNewContext } from 'node:vm';
import { collectStartupGarbage } from '../src/lifecycle/startup-gc';
import { startCli } from './helpers/cli';
import { startGateway } from './helpers/gateway';
import { call } from './helpers/http';
import { freePort } from './helpers/redis';
import { startUpstream } from './helpers/upstream';

/** A config file for the real CLI: free ports, one route to `upstreamUrl`, the given shutdown section. */
async function cliConfig(upstreamUrl: string, shutdown: string): Promise<{ file: string; port: number }> {
  const [port, adminPort] = [await freePort(), await freePort()];
  const file = join(mkdtempSync(join(tmpdir(), 'gw-cli-')), 'gw.yaml');
  writeFileSync(
    file,
    `listen: { host: 127.0.0.1, port: ${port} }\nadmin: { port: ${adminPort} }\nshutdown: ${shutdown}\n` +
      `upstreams: { up: { targets: ["${upstreamUrl}"] } }\nroutes: [ { name: r, match: { prefix: / }, upstream: up } ]\n`,
  );
  return { file, port };
}

t.test('admin listener: liveness, readiness, metrics by route name', async (t) => {
  const up = await startUpstream();
  const gw = await startGateway({ upstreams: { up: { targets: [up.url] } }, routes: [{ name: 'users', match: { prefix: '/api/users' }, upstream: 'up' }] });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  t.equal((await call(gw.adminUrl, '/healthz')).status, 200);
  const ready = await call(gw.adminUrl, '/readyz');
  t.equal(ready.status, 200);
  t.same(ready.json().checks, { draining: false, config: true });
  await call(gw.url, '/api/users/1');
  await call(gw.url, '/api/users/2');
  await call(gw.url, '/nope/123');
  const metrics = (await call(gw.adminUrl, '/metrics')).body;
  t.match(metrics, /gateway_requests_total\{route="users",method="GET",code="200",status_class="2xx"\} 2/);
  t.match(metrics, /gateway_request_duration_seconds_count\{route="users"\} 2/);
  t.match(metrics, /gateway_upstream_duration_seconds_count\{route="users"\} 2/);
  t.match(metrics, /gateway_added_duration_seconds_count\{route="users"\} 2/);
  t.match(metrics, /route="_unrouted",method="GET",code="404",status_class="4xx"\} 1/);
  t.notMatch(metrics, /\/api\/users\/1|\/nope/, 'raw paths never become labels');
  t.equal((await call(gw.url, '/healthz')).status, 404, 'probes live on the admin listener only');
});

t.test('access log can be turned off', async (t) => {
  const up = await startUpstream();
  const gw = await startGateway({ log: { access: false }, upstreams: { up: { targets: [up.url] } }, routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }] });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  await call(gw.url, '/x');
  gw.gateway.flushLogs();
  t.notOk(gw.logs.some((l) => l.msg === 'request completed'));
});

t.test('drain: readiness fails at once, listener serves through the delay, in-flight finishes', async (t) => {
  const up = await startUpstream(async (_req, res) => {
    await sleep(600);
    res.end('finished');
  });
  const gw = await startGateway({
    shutdown: { drainDelayMs: 300 },
    upstreams: { up: { targets: [up.url] } },
    routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }],
  });
  t.teardown(() => up.close());
  const inflight = call(gw.url, '/slow');
  await sleep(50);
  const shutdown = gw.gateway.shutdown();
  t.equal((await call(gw.adminUrl, '/readyz')).status, 503, 'not ready while draining');
  const during = call(gw.url, '/during-delay');
  const res = await inflight;
  t.equal(res.status, 200);
  t.equal(res.body, 'finished');
  const d = await during;
  t.equal(d.status, 200, 'new requests during the drain delay are still served');
  t.equal(d.headers.connection, 'close', 'and told to reconnect elsewhere');
  await shutdown;
  await t.rejects(call(gw.url, '/after'), /ECONNREFUSED/);
});

t.test('the CLI exits 0 after SIGTERM once the in-flight request completed', async (t) => {
  const up = await startUpstream(async (_req, res) => {
    await sleep(500);
    res.end('done');
  });
  t.teardown(() => up.close());
  const { file, port } = await cliConfig(up.url, '{ drainDelayMs: 200 }');
  const cli = startCli(file);
  t.ok(await cli.waitFor('gateway listening'), cli.output());
  const inflight = call(`http://127.0.0.1:${port}`, '/work');
  await sleep(100);
  cli.child.kill('SIGTERM');
  const res = await inflight;
  t.equal(res.status, 200);
  t.equal(res.body, 'done');
  t.equal(await cli.exited, 0, cli.output());
  t.match(cli.output(), /shutdown complete/);
});

t.test('past shutdown.timeoutMs the process exits anyway and says so', async (t) => {
  const up = await startUpstream(() => undefined);
  t.teardown(() => up.close());
  const { file, port } = await cliConfig(up.url, '{ drainDelayMs: 0, timeoutMs: 300 }');
  const cli = startCli(file);
  t.ok(await cli.waitFor('gateway listening'), cli.output());
  const hanging = call(`http://127.0.0.1:${port}`, '/hang').catch(() => undefined);
  await sleep(100);
  const started = Date.now();
  cli.child.kill('SIGTERM');
  t.equal(await cli.exited, 1);
  t.ok(Date.now() - started < 5000, 'exits soon after the 300 ms shutdown timeout');
  t.match(cli.output(), /shutdown timed out/);
  await hanging;
});

t.test('the start-up collection runs a full GC and leaves gc unexposed', async (t) => {
  const before = process.memoryUsage().heapUsed;
  // Garbage the collection must reclaim: built and dropped, most of it already promoted to the old
  // generation, which only a full collection reaches.
  ((): void => void Array.from({ length: 200000 }, (_, i) => ({ i, s: `x${i}` })))();
  collectStartupGarbage();
  t.ok(process.memoryUsage().heapUsed < before + 5e6, 'the garbage was collected');
  t.equal(typeof (globalThis as { gc?: unknown }).gc, 'undefined', 'gc is not a global of the gateway');
  t.equal(runInNewContext('typeof gc'), 'undefined', 'the flag was turned back off');
});

t.test('drain: a keep-alive client with a request in flight at SIGTERM gets Connection: close and the CLI exits 0 at once', async (t) => {
  const up = await startUpstream(async (req, res) => {
    if (req.url === '/slow') await sleep(500);
    res.end('done');
  });
  t.teardown(() => up.close());
  const { file, port } = await cliConfig(up.url, '{ drainDelayMs: 200, timeoutMs: 8000 }');
  const cli = startCli(file);
  t.ok(await cli.waitFor('gateway listening'), cli.output());
  const agent = new Agent({ keepAlive: true });
  t.teardown(() => agent.destroy());
  const get = (path: string): Promise<{ status: number; connection?: string; body: string }> =>
    new Promise((resolve, reject) => {
      request({ host: '127.0.0.1', port, path, agent }, (res) => {
        let body = '';
        res.on('data', (c: Buffer) => (body += c.toString()));
        res.on('end', () => resolve({ status: res.statusCode!, connection: res.headers.connection, body }));
      })
        .on('error', reject)
        .end();
    });
  // One keep-alive connection left idle, one busy when the signal comes.
  t.equal((await get('/warm')).connection, 'keep-alive');
  const idle = [...Object.values(agent.freeSockets)].flat()[0]!;
  const idleClosed = new Promise<void>((r) => idle.once('close', () => r()));
  const inflight = get('/slow');
  await sleep(100);
  cli.child.kill('SIGTERM');
  const res = await inflight;
  t.equal(res.status, 200);
  t.equal(res.body, 'done');
  t.equal(res.connection, 'close', 'the response in flight at SIGTERM tells the client to reconnect elsewhere');
  await idleClosed;
  t.equal(await cli.exited, 0, cli.output());
  t.notMatch(cli.output(), /shutdown timed out/);
  // The gateway's own clock: from the last request's completion to the end of the shutdown.
  // Access lines write their time in ISO-8601, pino's own lines in epoch milliseconds.
  const lines = cli.output().split('\n').filter((l) => l.startsWith('{')).map((l) => JSON.parse(l) as { msg: string; path?: string; time: number | string });
  const ms = (time: number | string | undefined): number => (typeof time === 'string' ? Date.parse(time) : (time ?? Infinity));
  const completed = ms(lines.find((l) => l.msg === 'request completed' && l.path === '/slow')!.time);
  const done = ms(lines.find((l) => l.msg === 'shutdown complete')?.time);
  t.ok(done - completed < 500, `shutdown complete ${done - completed} ms after the request in flight finished (timeoutMs is 8 s)`);
});

t.test('a request that reaches a closing listener on an open connection gets a SHUTTING_DOWN problem', async (t) => {
  const up = await startUpstream(async (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 4 });
    res.write('ab');
    await sleep(400);
    res.end('cd');
  });
  t.teardown(() => up.close());
  const gw = await startGateway({ upstreams: { up: { targets: [up.url] } }, routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }] });
  const socket = connect(gw.port, '127.0.0.1');
  let received = '';
  socket.on('data', (c: Buffer) => (received += c.toString('latin1')));
  const ended = new Promise<void>((r) => socket.once('close', () => r()));
  socket.write('GET /streaming HTTP/1.1\r\nHost: gw\r\n\r\n');
  while (!received.includes('ab')) await sleep(10);
  const closed = gw.gateway.shutdown();
  await sleep(50);
  socket.write('GET /late HTTP/1.1\r\nHost: gw\r\nX-Request-Id: late-1\r\n\r\n');
  await ended;
  await closed;
  const [first, second] = received.split(/(?=HTTP\/1\.1 )/);
  t.match(first, /^HTTP\/1\.1 200 /);
  t.match(first, /abcd$/, 'the response in flight finished');
  t.match(second, /^HTTP\/1\.1 503 /);
  t.match(second, /content-type: application\/problem\+json/i);
  t.match(second, /retry-after: 1/i);
  t.match(second, /x-request-id: late-1/i);
  t.match(second, /connection: close/i);
  const body = JSON.parse(second.slice(second.indexOf('\r\n\r\n') + 4)) as { code: string; requestId: string };
  t.equal(body.code, 'SHUTTING_DOWN');
  t.equal(body.requestId, 'late-1');
});

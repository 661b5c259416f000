import { createServer, type AddressInfo } from 'node:net';
import { performance } from 'node:perf_hooks';
import t from 'tap';
import { ConfigError, parseConfig } from '../src/config/load';
import { startFlakyUpstream, type FlakyUpstream } from './helpers/flaky-upstream';
import { startGateway, type TestGateway } from './helpers/gateway';
import { call } from './helpers/http';
import { metricValue } from './helpers/metrics';

async function setup(
  t: { teardown(fn: () => Promise<void>): void },
  upstream: Record<string, unknown>,
  count = 2,
): Promise<{ gw: TestGateway; ups: FlakyUpstream[] }> {
  const ups: FlakyUpstream[] = [];
  for (let i = 0; i < count; i++) ups.push(await startFlakyUpstream());
  const gw = await startGateway({
    log: { level: 'warn' },
    upstreams: { up: { targets: ups.map((u) => u.url), breaker: { enabled: false }, ...upstream } },
    routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }],
  });
  t.teardown(async () => {
    await gw.close();
    for (const u of ups) await u.close();
  });
  return { gw, ups };
}

const retries = (gw: TestGateway, cause?: string) => metricValue(gw.adminUrl, 'gateway_upstream_retries_total', cause ? { upstream: 'up', cause } : { upstream: 'up' });

t.test('a failed GET is retried on the other target: resets, gateway errors and refused connections', async (t) => {
  const { gw, ups } = await setup(t, { retries: { budgetRatio: 1 } });
  const [a, b] = ups;
  a.behave({ kind: 'reset' });
  for (let i = 0; i < 6; i++) {
    const res = await call(gw.url, `/reset/${i}`);
    t.equal(res.status, 200);
    t.equal(res.json().url, `/reset/${i}`);
    t.equal(res.json().host, new URL(b.url).host, 'the retry carries the Host of the target it went to');
  }
  t.ok(a.hits >= 3, `a was tried (${a.hits})`);
  t.equal(b.hits, 6, 'every request ended on b');
  t.equal(await retries(gw, 'reset'), a.hits);

  a.behave({ kind: 'status', status: 503 });
  for (let i = 0; i < 4; i++) t.equal((await call(gw.url, '/gw-error')).status, 200);
  t.ok((await retries(gw, 'gateway-error')) >= 2);

  a.behave({ kind: 'status', status: 500 });
  const statuses: number[] = [];
  for (let i = 0; i < 4; i++) statuses.push((await call(gw.url, '/plain-500')).status);
  t.ok(statuses.includes(500), 'a plain 500 is relayed, not retried (not in retries.on by default)');

  await a.stop();
  for (let i = 0; i < 4; i++) t.equal((await call(gw.url, '/refused')).status, 200);
  t.ok((await retries(gw, 'connect')) >= 2);
  t.equal(gw.logs.filter((l) => l.msg === 'upstream request failed').length, 0, 'no request failed for the client');
});

t.test('a POST is never replayed, with or without a body; PUT and DELETE only when configured', async (t) => {
  const { gw, ups } = await setup(t, { retries: { budgetRatio: 1 } });
  const [a, b] = ups;
  a.behave({ kind: 'reset' });
  b.behave({ kind: 'reset' });
  const withBody = await call(gw.url, '/p', { method: 'POST', body: '{"order":1}', headers: { 'content-type': 'application/json' } });
  t.equal(withBody.status, 502);
  t.equal(a.hits + b.hits, 1, 'a POST with a body reached the upstream once');
  const bodiless = await call(gw.url, '/p', { method: 'POST' });
  t.equal(bodiless.status, 502);
  t.equal(a.hits + b.hits, 2, 'a POST without a body (fresh connection) once too');

  a.behave({ kind: 'status', status: 503 });
  b.behave({ kind: 'status', status: 503 });
  t.equal((await call(gw.url, '/p', { method: 'POST', body: 'x' })).status, 503);
  t.equal(a.hits + b.hits, 3, 'a 503 to a POST is relayed as it is');
  t.equal((await call(gw.url, '/p', { method: 'PATCH', body: 'x' })).status, 503);
  t.equal((await call(gw.url, '/p', { method: 'DELETE' })).status, 503);
  t.equal(a.hits + b.hits, 5, 'PATCH and DELETE are not retried by default');
  t.equal(await retries(gw), 0);

  const configured = await setup(t, { retries: { budgetRatio: 1, methods: ['GET', 'PUT', 'DELETE'] } });
  const [c, d] = configured.ups;
  c.behave({ kind: 'status', status: 503 });
  d.behave({ kind: 'status', status: 503 });
  t.equal((await call(configured.gw.url, '/d', { method: 'DELETE' })).status, 503);
  t.equal(c.hits + d.hits, 2, 'DELETE retried once when configured');
  t.equal((await call(configured.gw.url, '/d', { method: 'PUT', body: 'replace' })).status, 503);
  t.equal(c.hits + d.hits, 3, 'a request with a body is never retried (its stream cannot be replayed)');
  t.equal((await call(configured.gw.url, '/d', { method: 'POST' })).status, 503);
  t.equal(c.hits + d.hits, 4);

});

t.test('retries stay within the retry budget', async (t) => {
  const { gw, ups } = await setup(t, { retries: { budgetRatio: 0.2, budgetMinRetries: 0, maxRetries: 3 } });
  const [a, b] = ups;
  a.behave({ kind: 'status', status: 503 });
  const n = 50;
  let ok = 0;
  for (let i = 0; i < n; i++) if ((await call(gw.url, '/x')).status === 200) ok++;
  const r = await retries(gw);
  t.ok(r > 0, `some retries (${r})`);
  t.ok(r <= 0.2 * n, `retries ≤ 20% of ${n} requests (${r})`);
  t.equal(a.hits + b.hits, n + r, 'every upstream request is a first attempt or a counted retry');
  t.equal(ok, b.hits, 'every request that reached b succeeded');
  t.ok((await metricValue(gw.adminUrl, 'gateway_upstream_retries_skipped_total', { upstream: 'up', reason: 'budget' })) > 0);
});

t.test('retries happen within the route deadline', async (t) => {
  // Loose margins: on a loaded machine timers and request handling run late.
  const { gw, ups } = await setup(t, { timeouts: { requestMs: 3200, headersMs: 2000 }, retries: { on: ['timeout'], budgetRatio: 1 } });
  const [a, b] = ups;
  a.behave({ kind: 'hang' });
  b.behave({ kind: 'hang' });
  const started = performance.now();
  const res = await call(gw.url, '/slow');
  const elapsed = performance.now() - started;
  t.equal(res.status, 504);
  t.equal(res.json().code, 'UPSTREAM_TIMEOUT');
  t.equal(await retries(gw, 'timeout'), 1, 'the headers timeout of the first attempt left time for one retry');
  t.ok(elapsed >= 3150, `answered at the deadline (${elapsed.toFixed(0)} ms)`);
  const failed = gw.logs.find((l) => l.msg === 'upstream request failed') as { err?: { code?: string } } | undefined;
  t.equal(failed?.err?.code, 'GW_REQUEST_TIMEOUT', 'the route deadline cut the retry short (its own headers timeout would have come at 4000 ms)');

  const late = await setup(t, { timeouts: { requestMs: 700, headersMs: 5000 }, retries: { on: ['timeout'], budgetRatio: 1 } });
  late.ups[0].behave({ kind: 'hang' });
  late.ups[1].behave({ kind: 'hang' });
  const res2 = await call(late.gw.url, '/slow');
  t.equal(res2.status, 504);
  t.equal(await retries(late.gw), 0, 'no retry once the deadline has passed');
  t.equal(late.ups[0].hits + late.ups[1].hits, 1);
});

t.test('a truncated body is never passed off as complete, and never retried once the answer started', async (t) => {
  const { gw, ups } = await setup(t, { retries: { budgetRatio: 1 } }, 1);
  const [a] = ups;
  a.behave({ kind: 'reset-mid-body' });
  await t.rejects(call(gw.url, '/cut'), /aborted|incomplete|socket hang up|ECONNRESET/, 'Content-Length body cut short: the client sees a broken response');
  a.behave({ kind: 'reset-mid-body', chunked: true });
  await t.rejects(call(gw.url, '/cut'), /aborted|incomplete|socket hang up|ECONNRESET/, 'chunked body cut short: no terminating chunk');
  t.equal(a.hits, 2, 'not retried: the client had the headers already');
  t.equal(await retries(gw), 0);
});

t.test('a single target is retried itself', async (t) => {
  const { gw, ups } = await setup(t, {}, 1);
  const [a] = ups;
  a.burst(1, { kind: 'status', status: 502 });
  const res = await call(gw.url, '/once');
  t.equal(res.status, 200);
  t.equal(a.hits, 2);
});

t.test('config: resilience defaults and checks', async (t) => {
  const problems = (upstream: Record<string, unknown>): string[] => {
    try {
      parseConfig({ upstreams: { up: { targets: ['http://127.0.0.1:1'], ...upstream } } }, { env: {} });
    } catch (err) {
      if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: ${p.message}`);
      throw err;
    }
    return [];
  };
  const cfg = parseConfig({ upstreams: { up: { targets: ['http://127.0.0.1:1'] } } }, { env: {} }).upstreams.up;
  t.match(cfg.breaker, { enabled: true, consecutiveFailures: 5, failureRatio: 0.5, openMs: 5000, maxOpenMs: 60000, halfOpenProbes: 1 });
  t.same(cfg.breaker.failureOn, ['connect', 'timeout', 'reset', 'bad-response', 'gateway-error']);
  t.match(cfg.healthCheck, { enabled: false, path: '/health', intervalMs: 5000 });
  t.match(cfg.retries, { maxRetries: 1, methods: ['GET', 'HEAD', 'OPTIONS'], budgetRatio: 0.2, staleConnection: true });
  t.same(cfg.queue, { timeoutMs: 5000, maxQueued: 1024 });

  t.same(problems({ retries: { methods: ['GET', 'POST'] } }), ['upstreams.up.retries.methods[1]: POST is not idempotent and is never retried']);
  t.same(problems({ breaker: { openMs: 10000, maxOpenMs: 5000 } }), ['upstreams.up.breaker.maxOpenMs: must be at least breaker.openMs (10000)']);
  t.same(problems({ breaker: { failureOn: ['connect', 'teapot'] } }), ['upstreams.up.breaker.failureOn[1]: expected one of connect, timeout, reset, bad-response, gateway-error or 5xx (got "teapot")']);
  t.ok(problems({ healthCheck: { expectedStatuses: ['2xx', '6xx'] } }).every((p) => p.startsWith('upstreams.up.healthCheck.expectedStatuses[1]: ')));
  t.same(problems({ healthCheck: { expectedStatuses: ['2xx', 301] } }), []);
  t.same(problems({ queue: { timeoutMs: 0 } }), ['upstreams.up.queue.timeoutMs: expected at least 1 (got 0)']);
});

t.test('an attempt that never reached its target moves to another one, whatever the method, the body and the budget', async (t) => {
  // The defaults: one retry, a budget of 20 % with a floor of 3 per 10 s, breaker on.
  const ups: FlakyUpstream[] = [];
  for (let i = 0; i < 3; i++) ups.push(await startFlakyUpstream());
  const gw = await startGateway({
    log: { level: 'warn' },
    upstreams: { up: { targets: ups.map((u) => u.url), retries: { budgetMinRetries: 0 } } },
    routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }],
  });
  t.teardown(async () => {
    await gw.close();
    for (const u of ups) await u.close();
  });
  await ups[1].stop();
  const statuses: number[] = [];
  for (let i = 0; i < 12; i++) statuses.push((await call(gw.url, `/light/${i}`)).status);
  t.same(statuses, Array(12).fill(200), 'one target of three down, light traffic: no 502');
  const post = await call(gw.url, '/order', { method: 'POST', body: '{"order":1}', headers: { 'content-type': 'application/json' } });
  t.equal(post.status, 200);
  t.equal(post.json().method, 'POST');
  const seen = ups.flatMap((u) => u.seen).filter((s) => s.url === '/order');
  t.equal(seen.length, 1, 'the POST reached a live target once');
  t.equal(seen[0].body, '{"order":1}', 'with its whole body');
  t.ok((await retries(gw, 'connect')) >= 1);

  // Every target down: bounded by the targets, then a 502.
  await ups[0].stop();
  await ups[2].stop();
  const dead = await call(gw.url, '/dead', { method: 'POST', body: 'x' });
  t.equal(dead.status, 502);
  t.equal(dead.json().code, 'UPSTREAM_CONNECT_FAILED');
});

t.test('a connect timeout moves the request to another target too', async (t) => {
  // Accepts TCP connections and never says a word: a TLS handshake to it never completes.
  const mute = createServer(() => undefined);
  await new Promise<void>((r) => mute.listen(0, '127.0.0.1', r));
  const live = await startFlakyUpstream();
  const gw = await startGateway({
    log: { level: 'warn' },
    upstreams: {
      up: {
        // The rotation starts with the first target.
        targets: [`https://127.0.0.1:${(mute.address() as AddressInfo).port}`, live.url],
        timeouts: { connectMs: 200 },
        retries: { maxRetries: 0 },
      },
    },
    routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }],
  });
  t.teardown(async () => {
    await gw.close();
    await live.close();
    mute.close();
  });
  const started = performance.now();
  const res = await call(gw.url, '/x', { method: 'POST', body: 'y' });
  t.equal(res.status, 200);
  t.equal(live.seen[0]?.body, 'y');
  t.ok(performance.now() - started >= 200, 'after the connect timeout of the first target');
  t.equal(await retries(gw, 'connect'), 1);
});

t.test('an upstream response whose framing breaks before anything reached the client is a 502 problem, counted as 5xx', async (t) => {
  // The head and a chunk-size line that is not hex, in one packet.
  const broken = createServer((socket) => {
    socket.once('data', () => socket.end('HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\nhello\r\n0\r\n\r\n'));
  });
  await new Promise<void>((r) => broken.listen(0, '127.0.0.1', r));
  const gw = await startGateway({
    log: { level: 'warn' },
    upstreams: { up: { targets: [`http://127.0.0.1:${(broken.address() as AddressInfo).port}`] } },
    routes: [{ name: 'broken', match: { prefix: '/' }, upstream: 'up' }],
  });
  t.teardown(async () => {
    await gw.close();
    broken.close();
  });
  const res = await call(gw.url, '/x', { headers: { 'x-request-id': 'broken-1' } });
  t.equal(res.status, 502);
  t.match(res.headers['content-type'], /application\/problem\+json/);
  t.equal(res.json().code, 'UPSTREAM_BAD_RESPONSE');
  t.equal(res.json().requestId, 'broken-1');
  t.equal(await metricValue(gw.adminUrl, 'gateway_requests_total', { route: 'broken', status_class: '5xx' }), 1);
  t.equal(await metricValue(gw.adminUrl, 'gateway_requests_total', { route: 'broken', status_class: '2xx' }), 0);
});

import { createServer, request } from 'node:http';
import type { AddressInfo } from 'node:net';
import t from 'tap';
import { ConfigError, parseConfig } from '../src/config/load';
import { startFlakyUpstream, type FlakyUpstream } from './helpers/flaky-upstream';
import { startGateway, withTestDefaults, type TestConfig, type TestGateway } from './helpers/gateway';
import { call } from './helpers/http';
import { metricValue } from './helpers/metrics';

function config(stable: FlakyUpstream, canary: FlakyUpstream, split: Record<string, unknown>): TestConfig {
  return {
    admin: { token: ADMIN_TOKEN },
    log: { level: 'info', access: false },
    upstreams: { stable: { targets: [stable.url], retries: { maxRetries: 0 } }, canary: { targets: [canary.url], retries: { maxRetries: 0 } } },
    routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'stable', split }],
  };
}

async function setup(t: { teardown(fn: () => Promise<void>): void }, split: Record<string, unknown>): Promise<{ gw: TestGateway; stable: FlakyUpstream; canary: FlakyUpstream }> {
  const stable = await startFlakyUpstream();
  const canary = await startFlakyUpstream();
  const gw = await startGateway(config(stable, canary, split));
  t.teardown(async () => {
    await gw.close();
    await stable.close();
    await canary.close();
  });
  return { gw, stable, canary };
}

/** Sends `n` requests, `parallel` at a time; how many were not answered 200. */
async function send(gw: TestGateway, n: number, headers: (i: number) => Record<string, string> = () => ({})): Promise<number> {
  const parallel = 20;
  let bad = 0;
  for (let i = 0; i < n; i += parallel) {
    const batch = [];
    for (let j = i; j < Math.min(n, i + parallel); j++) batch.push(call(gw.url, `/x${j}`, { headers: headers(j) }));
    for (const res of await Promise.all(batch)) if (res.status !== 200) bad++;
  }
  return bad;
}

const CANARY_95_5 = { sides: [{ upstream: 'stable', weight: 95 }, { upstream: 'canary', weight: 5 }] };

t.test('95/5 weights send 5 % of 2000 requests to the canary', async (t) => {
  const { gw, stable, canary } = await setup(t, CANARY_95_5);
  t.equal(await send(gw, 2000), 0, 'every request answered 200');
  t.ok(Math.abs(canary.hits - 100) <= 20, `canary got ${canary.hits} of 2000 (expected 100 ± 20)`);
  t.equal(stable.hits + canary.hits, 2000);
  t.equal(await metricValue(gw.adminUrl, 'gateway_split_requests_total', { route: 'r', upstream: 'canary', reason: 'weight' }), canary.hits);
  t.equal(await metricValue(gw.adminUrl, 'gateway_split_requests_total', { route: 'r', upstream: 'stable', reason: 'weight' }), stable.hits);
});

t.test('a header or cookie match sends beta users to the canary whatever the weights', async (t) => {
  const { gw, stable, canary } = await setup(t, {
    sides: [
      { upstream: 'stable', weight: 1 },
      { upstream: 'canary', weight: 0, match: [{ header: 'X-Beta', value: 'yes' }, { cookie: 'channel', value: 'beta' }] },
    ],
  });
  t.equal(await send(gw, 40, (i): Record<string, string> => (i % 2 ? { 'x-beta': 'yes' } : { cookie: 'a=1; channel=beta' })), 0, 'every request answered 200');
  t.equal(canary.hits, 40, 'every matched request went to the canary');
  t.equal(stable.hits, 0);
  t.equal(await send(gw, 40, (i): Record<string, string> => (i % 2 ? { 'x-beta': 'no' } : { cookie: 'channel=stable' })), 0, 'every request answered 200');
  t.equal(canary.hits, 40, 'a weight of 0 takes nothing but matched requests');
  t.equal(stable.hits, 40, 'other values go by weight');
  t.equal(await metricValue(gw.adminUrl, 'gateway_split_requests_total', { route: 'r', upstream: 'canary', reason: 'match' }), 40);
});

t.test('sticky by header: each user stays on one side, and users spread by the weights', async (t) => {
  const { gw, stable, canary } = await setup(t, { sticky: 'header:x-user', sides: [{ upstream: 'stable', weight: 50 }, { upstream: 'canary', weight: 50 }] });
  const users = 200;
  t.equal(await send(gw, users * 5, (i) => ({ 'x-user': `user-${i % users}` })), 0, 'every request answered 200');
  const sideOf = new Map<string, Set<string>>();
  for (const [side, up] of [['stable', stable], ['canary', canary]] as const) {
    for (const s of up.seen) {
      const u = String(s.headers['x-user']);
      if (!sideOf.has(u)) sideOf.set(u, new Set());
      sideOf.get(u)!.add(side);
    }
  }
  t.equal(sideOf.size, users);
  t.equal([...sideOf.values()].filter((s) => s.size > 1).length, 0, 'no user saw both sides');
  const onCanary = [...sideOf.values()].filter((s) => s.has('canary')).length;
  t.ok(onCanary > 60 && onCanary < 140, `${onCanary} of ${users} users on the canary at 50/50`);
  t.equal(await metricValue(gw.adminUrl, 'gateway_split_requests_total', { route: 'r', upstream: 'canary', reason: 'sticky' }), canary.hits);
});

t.test('sticky users move only one way when the canary share grows', async (t) => {
  const { gw, stable, canary } = await setup(t, { sticky: 'header:x-user', sides: [{ upstream: 'stable', weight: 90 }, { upstream: 'canary', weight: 10 }] });
  const users = 300;
  t.equal(await send(gw, users, (i) => ({ 'x-user': `u${i}` })), 0, 'every request answered 200');
  const before = new Set(canary.seen.map((s) => String(s.headers['x-user'])));
  await gw.gateway.reload(parseConfig(withTestDefaults(config(stable, canary, { sticky: 'header:x-user', sides: [{ upstream: 'stable', weight: 70 }, { upstream: 'canary', weight: 30 }] }))));
  const seenBefore = canary.seen.length;
  t.equal(await send(gw, users, (i) => ({ 'x-user': `u${i}` })), 0, 'every request answered 200');
  const after = new Set(canary.seen.slice(seenBefore).map((s) => String(s.headers['x-user'])));
  t.equal([...before].filter((u) => !after.has(u)).length, 0, 'no canary user went back to stable');
  t.ok(after.size > before.size * 2, `canary users grew from ${before.size} to ${after.size}`);
});

t.test('a reload changes the weights for new requests; a request in flight finishes on its side', async (t) => {
  const { gw, stable, canary } = await setup(t, CANARY_95_5);
  t.equal(await send(gw, 200), 0, 'every request answered 200');
  t.equal(canary.hits, 10, '95/5 before the reload');
  stable.burst(1, { kind: 'delay', ms: 600 });
  canary.burst(1, { kind: 'delay', ms: 600 });
  const slow = [call(gw.url, '/slow-a'), call(gw.url, '/slow-b')];
  await new Promise((r) => setTimeout(r, 100));
  const result = await gw.gateway.reload(parseConfig(withTestDefaults(config(stable, canary, { sides: [{ upstream: 'stable', weight: 1 }, { upstream: 'canary', weight: 1 }] }))));
  t.ok(result, 'reload applied');
  const [a, b] = await Promise.all(slow);
  t.equal(a.status, 200, 'a request in flight during the reload is answered');
  t.equal(b.status, 200, 'a request in flight during the reload is answered');
  const stableBefore = stable.hits;
  const canaryBefore = canary.hits;
  t.equal(await send(gw, 200), 0, 'every request answered 200');
  t.equal(canary.hits - canaryBefore, 100, '50/50 after the reload');
  t.equal(stable.hits - stableBefore, 100);
});

t.test('each side keeps its own health: a failing canary does not take the stable side with it', async (t) => {
  const { gw, stable, canary } = await setup(t, { sides: [{ upstream: 'stable', weight: 1 }, { upstream: 'canary', weight: 1 }] });
  await canary.stop();
  const statuses: number[] = [];
  for (let i = 0; i < 40; i++) statuses.push((await call(gw.url, `/y${i}`)).status);
  t.equal(statuses.filter((s) => s === 200).length, 20, 'the stable half is served');
  t.equal(stable.hits, 20);
  t.equal(statuses.filter((s) => s >= 500 && s !== 500).length, 20, 'the canary half fails with 502/503, not 500');
  const responses = (upstream: string, status_class: string) => metricValue(gw.adminUrl, 'gateway_split_responses_total', { route: 'r', upstream, status_class });
  t.equal(await responses('stable', '2xx'), 20, 'answers counted by side');
  t.equal(await responses('canary', '5xx'), 20);
  t.equal(await responses('stable', '5xx'), 0);
});

t.test('/admin/routes shows each side of a split with its weight, rules, requests and answers', async (t) => {
  const { gw, stable, canary } = await setup(t, {
    sticky: 'header:x-user',
    sides: [
      { upstream: 'stable', weight: 3 },
      { upstream: 'canary', weight: 1, match: [{ header: 'x-beta', value: 'yes' }] },
    ],
  });
  canary.behave({ kind: 'status', status: 503 });
  t.equal(await send(gw, 8), 2, 'by weight 3:1: the canary answers 2 of 8 with its 503');
  for (let i = 0; i < 2; i++) t.equal((await call(gw.url, '/beta', { headers: { 'x-beta': 'yes' } })).status, 503, 'matched: the canary answers');
  const users = 6;
  for (let i = 0; i < users; i++) await call(gw.url, '/u', { headers: { 'x-user': `user-${i}` } });
  const routes = (await call(gw.adminUrl, '/admin/routes', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json<{ name: string; split: any; mirror: unknown; policies: Record<string, unknown> }[]>();
  const view = routes[0];
  t.equal(view.mirror, null);
  t.notOk('split' in view.policies, 'the split is not listed as a policy');
  t.equal(view.split.sticky, 'header:x-user');
  const [s, c] = view.split.sides;
  t.match(s, { upstream: 'stable', weight: 3, share: 0.75, match: [], available: 1, targets: 1, panic: false });
  t.match(c, { upstream: 'canary', weight: 1, share: 0.25, match: [{ header: 'x-beta', value: 'yes' }] });
  t.same(s.requests, { match: 0, sticky: stable.hits - 6, weight: 6 }, 'weight 3:1 gives 6 of 8');
  t.same(c.requests, { match: 2, sticky: canary.hits - 4, weight: 2 });
  t.equal(s.requests.sticky + c.requests.sticky, users);
  t.same(s.responses, { '0xx': 0, '1xx': 0, '2xx': stable.hits, '3xx': 0, '4xx': 0, '5xx': 0 });
  t.same(c.responses, { '0xx': 0, '1xx': 0, '2xx': 0, '3xx': 0, '4xx': 0, '5xx': canary.hits });
});

function problems(split: Record<string, unknown>, upstream = 'stable'): string[] {
  try {
    parseConfig(
      withTestDefaults({
        upstreams: { stable: { targets: ['http://127.0.0.1:1'] }, canary: { targets: ['http://127.0.0.1:2'] } },
        routes: [{ name: 'r', match: { prefix: '/' }, upstream, split }],
      }),
    );
    return [];
  } catch (err) {
    if (err instanceof ConfigError) return err.problems.map((p) => `${p.path}: ${p.message}`);
    throw err;
  }
}

t.test('the config check explains a wrong split', async (t) => {
  t.same(problems({ sides: [{ upstream: 'canary' }, { upstream: 'nope' }] }), [
    'routes[0].split.sides[1].upstream: unknown upstream "nope"',
    'routes[0].split.sides: the route\'s upstream "stable" must be one of the sides: with split, upstream names the side that WebSocket upgrades go to',
  ]);
  t.same(problems({ sides: [{ upstream: 'stable', weight: 0 }, { upstream: 'canary', weight: 0, match: [{ header: 'a', cookie: 'b', value: 'x' }] }] }), [
    'routes[0].split.sides[1].match[0]: give exactly one of header or cookie',
    'routes[0].split.sides: at least one side needs a weight above 0',
  ]);
  t.same(problems({ sides: [{ upstream: 'stable' }, { upstream: 'stable' }] }), ['routes[0].split.sides[1].upstream: upstream "stable" is already a side of this split']);
  t.match(problems({ sticky: 'path', sides: [{ upstream: 'stable' }, { upstream: 'canary' }] }).join('\n'), /split\.sticky.*header:<name>, cookie:<name>, ip or consumer/);
  t.same(problems({ sides: [{ upstream: 'stable' }, { upstream: 'canary' }] }), []);
});

async function setupMirror(
  t: { teardown(fn: () => Promise<void>): void },
  mirror: Record<string, unknown>,
): Promise<{ gw: TestGateway; main: FlakyUpstream; shadow: FlakyUpstream }> {
  const main = await startFlakyUpstream();
  const shadow = await startFlakyUpstream();
  const gw = await startGateway({
    admin: { token: ADMIN_TOKEN },
    log: { level: 'info', access: false },
    upstreams: { main: { targets: [main.url] }, shadow: { targets: [shadow.url], retries: { maxRetries: 0 }, timeouts: { requestMs: 3000 } } },
    routes: [{ name: 'm', match: { prefix: '/' }, upstream: 'main', mirror: { upstream: 'shadow', ...mirror } }],
  });
  t.teardown(async () => {
    // The shadow first: copies left hanging on it end, so the gateway's pools close at once.
    await shadow.close();
    await gw.close();
    await main.close();
  });
  return { gw, main, shadow };
}

const mirrored = (gw: TestGateway, result: string): Promise<number> => metricValue(gw.adminUrl, 'gateway_mirror_requests_total', { route: 'm', upstream: 'shadow', result });

const ADMIN_TOKEN = 'admin-token-of-the-traffic-tests-0123';
const NO_RESULTS = { '2xx': 0, '3xx': 0, '4xx': 0, '5xx': 0, error: 0, dropped: 0, 'body-too-large': 0, 'body-incomplete': 0, 'no-target': 0 };

/** The mirror of route m as /admin/routes shows it. */
async function mirrorStatus(gw: TestGateway): Promise<{ inFlight: number; results: Record<string, number> }> {
  const routes = (await call(gw.adminUrl, '/admin/routes', { headers: { authorization: `Bearer ${ADMIN_TOKEN}` } })).json<{ name: string; mirror: { inFlight: number; results: Record<string, number> } }[]>();
  const { inFlight, results } = routes.find((r) => r.name === 'm')!.mirror;
  return { inFlight, results };
}

/** POSTs `chunks` with chunked transfer coding, one write each. */
function postChunks(base: string, path: string, chunks: string[]): Promise<{ status: number; body: string }> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path, method: 'POST', agent: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body }));
    });
    req.on('error', reject);
    for (const c of chunks) req.write(c);
    req.end();
  });
}

async function until(cond: () => boolean | Promise<boolean>, ms = 5000): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return true;
    await new Promise((r) => setTimeout(r, 20));
  }
  return false;
}

t.test('mirroring copies requests to the shadow, marked, and discards its answers', async (t) => {
  const { gw, main, shadow } = await setupMirror(t, {});
  shadow.behave({ kind: 'status', status: 503 });
  for (let i = 0; i < 10; i++) {
    const res = await call(gw.url, `/m${i}?q=${i}`, { headers: { 'x-user': 'a' } });
    t.equal(res.status, 200, 'the client gets the main upstream answer');
  }
  t.equal(main.hits, 10);
  t.ok(await until(() => shadow.hits === 10), `the shadow got ${shadow.hits} copies`);
  t.equal(shadow.seen[0].url, '/m0?q=0');
  t.equal(shadow.seen[0].headers['x-gateway-mirror'], '1', 'copies are marked');
  t.equal(shadow.seen[0].headers['x-user'], 'a');
  t.equal(main.seen[0].headers['x-gateway-mirror'], undefined, 'the real request is not marked');
  t.ok(await until(async () => (await mirrored(gw, '5xx')) === 10), 'shadow answers counted by class');
  await call(gw.url, '/again', { headers: { 'x-gateway-mirror': '1' } });
  t.equal(main.hits, 11);
  // A later copy arrives after it: had the marked request been copied, the shadow would have it first.
  await call(gw.url, '/after');
  t.ok(await until(() => shadow.hits === 11), 'the next copy arrives');
  t.same(
    shadow.seen.map((s) => s.url),
    [...Array.from({ length: 10 }, (_, i) => `/m${i}?q=${i}`), '/after'],
    'a mirrored request is never mirrored again',
  );
});

t.test('request bodies are copied to the shadow, with a Content-Length or chunked', async (t) => {
  const { gw, main, shadow } = await setupMirror(t, {});
  const sized = JSON.stringify({ order: 42, items: ['a', 'b'] });
  const res = await call(gw.url, '/orders', { method: 'POST', headers: { 'content-type': 'application/json' }, body: sized });
  t.equal(res.status, 200);
  t.ok(await until(() => shadow.hits === 1), 'the copy arrives');
  t.equal(shadow.seen[0].method, 'POST');
  t.equal(shadow.seen[0].body, sized, 'the shadow gets the body');
  t.equal(shadow.seen[0].headers['content-type'], 'application/json');
  t.equal(shadow.seen[0].headers['content-length'], String(sized.length));
  t.equal(main.seen[0].body, sized, 'the real upstream gets it too');

  // Chunked: no length known up front, the copy gets one.
  const chunked = await postChunks(gw.url, '/chunked', ['first,', 'second,', 'third']);
  t.equal(chunked.status, 200);
  t.ok(await until(() => shadow.hits === 2));
  t.equal(shadow.seen[1].body, 'first,second,third');
  t.equal(main.seen[1].body, 'first,second,third');
  t.ok(await until(async () => (await mirrored(gw, '2xx')) === 2), 'both copies counted as sent');
  t.same(await mirrorStatus(gw), { inFlight: 0, results: { ...NO_RESULTS, '2xx': 2 } }, 'the admin API shows the results');
});

t.test('a body over maxBodyBytes is not mirrored (counted), and reaches the real upstream whole', async (t) => {
  const { gw, main, shadow } = await setupMirror(t, { maxBodyBytes: 1000 });
  const big = 'x'.repeat(5000);
  t.equal((await call(gw.url, '/sized', { method: 'POST', body: big })).status, 200, 'Content-Length over the cap');
  t.equal(await mirrored(gw, 'body-too-large'), 1, 'known from Content-Length at once');
  // Chunked, growing past the cap only on its third chunk.
  const chunks = ['a'.repeat(400), 'b'.repeat(400), 'c'.repeat(400), 'd'.repeat(400)];
  t.equal((await postChunks(gw.url, '/chunked', chunks)).status, 200, 'chunked over the cap');
  t.equal(await mirrored(gw, 'body-too-large'), 2, 'counted when it grows past the cap');
  t.equal(main.seen[0].body, big);
  t.equal(main.seen[1].body, chunks.join(''), 'the real upstream got every byte');
  // Exactly at the cap is copied.
  t.equal((await call(gw.url, '/fits', { method: 'POST', body: 'y'.repeat(1000) })).status, 200);
  t.ok(await until(() => shadow.hits === 1), 'a body at the cap is copied');
  t.equal(shadow.seen[0].url, '/fits');
  t.equal(shadow.seen[0].body, 'y'.repeat(1000));
  t.same((await mirrorStatus(gw)).results, { ...NO_RESULTS, 'body-too-large': 2, '2xx': 1 });
});

t.test('a body streams to the real upstream as it arrives while it is kept for the copy', async (t) => {
  const shadow = await startFlakyUpstream();
  const received: string[] = [];
  const main = createServer((req, res) => {
    req.on('data', (c: Buffer) => received.push(c.toString()));
    req.on('end', () => res.end(`got ${received.join('')}`));
  });
  await new Promise<void>((r) => main.listen(0, '127.0.0.1', r));
  const gw = await startGateway({
    log: { level: 'info', access: false },
    upstreams: { main: { targets: [`http://127.0.0.1:${(main.address() as AddressInfo).port}`] }, shadow: { targets: [shadow.url] } },
    routes: [{ name: 'm', match: { prefix: '/' }, upstream: 'main', mirror: { upstream: 'shadow' } }],
  });
  t.teardown(async () => {
    await gw.close();
    await shadow.close();
    await new Promise((r) => main.close(r));
  });
  const u = new URL(gw.url);
  const answer = new Promise<string>((resolve, reject) => {
    const req = request({ host: u.hostname, port: u.port, path: '/stream', method: 'POST', agent: false }, (res) => {
      let body = '';
      res.on('data', (c: Buffer) => (body += c.toString()));
      res.on('end', () => resolve(body));
    });
    req.on('error', reject);
    req.write('part-one;');
    // The rest is sent only once the upstream has the first part: a gateway holding the body back would hang here.
    void until(() => received.join('') === 'part-one;').then((ok) => {
      t.ok(ok, 'the upstream has the first part before the client sent the rest');
      req.end('part-two');
    });
  });
  t.equal(await answer, 'got part-one;part-two');
  t.ok(await until(() => shadow.hits === 1));
  t.equal(shadow.seen[0].body, 'part-one;part-two', 'the copy has the whole body');
});

t.test('a hanging shadow never delays a request with a body; a client that cuts its body leaves no copy', async (t) => {
  const { gw, main, shadow } = await setupMirror(t, { maxConcurrent: 1 });
  shadow.behave({ kind: 'hang' });
  const started = Date.now();
  const res = await call(gw.url, '/slow', { method: 'POST', body: 'payload' });
  t.equal(res.status, 200, 'answered while the copy hangs');
  t.ok(Date.now() - started < 1000, `answered in ${Date.now() - started} ms`);
  t.ok(await until(() => shadow.hits === 1), 'the copy is on the shadow, unanswered');
  t.equal((await call(gw.url, '/slow2', { method: 'POST', body: 'payload' })).status, 200);
  t.equal(await mirrored(gw, 'dropped'), 1, 'over maxConcurrent: dropped, the client still served');
  await shadow.stop();
  t.ok(await until(async () => (await mirrored(gw, 'error')) === 1), 'the hanging copy ends as an error');
  await shadow.start();
  shadow.behave({ kind: 'ok' });

  // A client that sends half its body and goes away: nothing is mirrored, the slot is freed.
  const u = new URL(gw.url);
  await new Promise<void>((resolve) => {
    const req = request({ host: u.hostname, port: u.port, path: '/cut', method: 'POST', agent: false, headers: { 'content-length': '100' } });
    req.on('error', () => resolve());
    req.write('only part');
    void until(() => main.seen.some((s) => s.url === '/cut')).then(() => req.destroy());
  });
  t.ok(await until(async () => (await mirrored(gw, 'body-incomplete')) === 1), 'counted as body-incomplete');
  t.equal((await call(gw.url, '/next', { method: 'POST', body: 'again' })).status, 200);
  t.ok(await until(() => shadow.seen.some((s) => s.url === '/next')), 'the slot is free again');
  t.notOk(shadow.seen.some((s) => s.url === '/cut'), 'the cut body was never mirrored');
});

t.test('a chunked body over the route\'s body limit still gets 413, and no copy', async (t) => {
  const main = await startFlakyUpstream();
  const shadow = await startFlakyUpstream();
  const gw = await startGateway({
    log: { level: 'info', access: false },
    upstreams: { main: { targets: [main.url], retries: { maxRetries: 0 } }, shadow: { targets: [shadow.url] } },
    routes: [{ name: 'm', match: { prefix: '/' }, upstream: 'main', mirror: { upstream: 'shadow' }, policies: { limits: { maxBodyBytes: 10 } } }],
  });
  t.teardown(async () => {
    await gw.close();
    await shadow.close();
    await main.close();
  });
  const res = await postChunks(gw.url, '/big', ['0123456789', 'abcdef']);
  t.equal(res.status, 413, 'the body limit answers as without a mirror');
  t.ok(await until(async () => (await mirrored(gw, 'body-incomplete')) === 1), 'the cut body is not mirrored');
  t.equal((await postChunks(gw.url, '/small', ['01234', '56789'])).status, 200, 'a body within the limit passes');
  t.ok(await until(() => shadow.hits === 1), 'and is mirrored');
  t.equal(shadow.seen[0].body, '0123456789');
});

t.test('a hanging or down shadow never delays or fails the client; copies over maxConcurrent are dropped', async (t) => {
  const { gw, main, shadow } = await setupMirror(t, { maxConcurrent: 2 });
  shadow.behave({ kind: 'hang' });
  for (let i = 0; i < 6; i++) {
    const started = Date.now();
    const res = await call(gw.url, `/h${i}`);
    t.equal(res.status, 200);
    t.ok(Date.now() - started < 1000, `answered in ${Date.now() - started} ms while the shadow hangs`);
  }
  t.ok(await until(() => shadow.hits === 2), 'two copies in flight');
  t.equal(await mirrored(gw, 'dropped'), 4, 'the others dropped');
  await shadow.stop();
  t.ok(await until(async () => (await mirrored(gw, 'error')) === 2), 'the hanging copies end as errors');
  for (let i = 0; i < 3; i++) t.equal((await call(gw.url, `/d${i}`)).status, 200, 'shadow down: the client is served');
  t.ok(await until(async () => (await mirrored(gw, 'error')) === 5), 'copies to a down shadow count as errors');
  t.equal(main.hits, 9);
});

t.test('sampleRatio copies that share of the requests', async (t) => {
  const { gw, shadow } = await setupMirror(t, { sampleRatio: 0.25 });
  t.equal(await send(gw, 400), 0, 'every request answered 200');
  t.ok(await until(async () => (await mirrored(gw, '2xx')) === shadow.hits));
  t.ok(shadow.hits > 60 && shadow.hits < 140, `${shadow.hits} of 400 copied at 0.25`);
});

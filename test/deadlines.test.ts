import { request } from 'node:http';
import { createServer, type AddressInfo } from 'node:net';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import { setTimeout as sleep } from 'node:timers/promises';
import t, { type Test } from 'tap';
import { Deadlines, type Timed } from '../src/proxy/deadlines';
import { startGateway } from './helpers/gateway';
import { call } from './helpers/http';
import { startUpstream } from './helpers/upstream';

function entry(name: string, fired: string[], then?: () => void): Timed {
  return {
    deadlineAt: 0,
    deadlineSlot: -1,
    deadlinePrev: null,
    deadlineNext: null,
    deadlinePassed() {
      fired.push(name);
      then?.();
    },
  };
}

t.test('deadlines fire once when they pass, never when disarmed, and not a turn early', async (t) => {
  const wheel = new Deadlines();
  t.teardown(() => wheel.close());
  const fired: string[] = [];
  const now = performance.now();
  const past = entry('past', fired);
  const soon = entry('soon', fired);
  const disarmed = entry('disarmed', fired);
  const later = entry('later', fired, () => wheel.arm(chained, performance.now() + 20));
  const chained = entry('chained', fired);
  const nextTurn = entry('next-turn', fired);
  wheel.arm(soon, now + 30);
  wheel.arm(disarmed, now + 30);
  wheel.arm(past, now - 5);
  wheel.arm(later, now + 400);
  // The same slot as `soon` one turn of the wheel later (1024 ticks of 10 ms).
  wheel.arm(nextTurn, now + 30 + 10240);
  wheel.disarm(disarmed);
  wheel.disarm(disarmed);

  await sleep(200);
  t.same(fired, ['past', 'soon'], 'the passed deadlines fired, in order; the disarmed one did not');
  t.equal(soon.deadlineSlot, -1, 'a fired entry is no longer armed');
  await sleep(500);
  t.same(fired, ['past', 'soon', 'later', 'chained'], 'a deadline armed by a firing handler fires too');
  t.not(nextTurn.deadlineSlot, -1, 'a deadline a turn away waits in its slot');
  wheel.disarm(nextTurn);
});

t.test('a closed wheel arms nothing', async (t) => {
  const wheel = new Deadlines();
  const fired: string[] = [];
  wheel.close();
  const e = entry('x', fired);
  wheel.arm(e, performance.now());
  await sleep(50);
  t.same(fired, []);
  t.equal(e.deadlineSlot, -1);
});

/**
 * Within 10 % + 20 ms of the setting, plus how late this process's event loop ran while it was
 * measured (the gateway runs here: on a machine loaded past its cores no timer can be on time; on
 * an idle one the lag is a few ms).
 */
function onTime(t: Test, took: number, ms: number, what: string): void {
  const lag = loopLag.max / 1e6;
  loopLag.reset();
  t.ok(took <= ms * 1.1 + 20 + lag, `${what}: fired after ${Math.round(took)} ms (setting ${ms} ms; event loop up to ${Math.round(lag)} ms late)`);
}

const loopLag = monitorEventLoopDelay({ resolution: 5 });
loopLag.enable();
t.teardown(() => loopLag.disable());

t.test('upstream timeouts fire on time: connect, headers, body and the request deadline', async (t) => {
  // Accepts TCP connections and never says a word: a TLS handshake to it never completes.
  // The timers start when the connection opens (connect) and when the request reached the upstream
  // (headers): measured from there, so the client's own round trip does not count.
  let startedAt = 0;
  const mute = createServer(() => {
    startedAt = performance.now();
  });
  await new Promise<void>((r) => mute.listen(0, '127.0.0.1', r));
  const mutePort = (mute.address() as AddressInfo).port;
  const hang = await startUpstream(() => {
    startedAt = performance.now();
  });
  const pause = await startUpstream((_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    res.write('first chunk');
  });
  const dribble = await startUpstream(async (_req, res) => {
    res.writeHead(200, { 'content-type': 'text/plain' });
    for (let i = 0; i < 50 && !res.destroyed; i++) {
      res.write('x');
      await sleep(50);
    }
    res.end();
  });
  const retries = { maxRetries: 0 };
  const gw = await startGateway({
    upstreams: {
      mute: { targets: [`https://127.0.0.1:${mutePort}`], timeouts: { connectMs: 300 }, retries },
      hang: { targets: [hang.url], timeouts: { headersMs: 300 }, retries },
      pause: { targets: [pause.url], timeouts: { bodyMs: 300 }, retries },
      dribble: { targets: [dribble.url], timeouts: { requestMs: 300 }, retries },
    },
    routes: ['mute', 'hang', 'pause', 'dribble'].map((n) => ({ name: n, match: { prefix: `/${n}` }, upstream: n })),
  });
  t.teardown(async () => {
    await gw.close();
    await Promise.all([hang.close(), pause.close(), dribble.close()]);
    mute.close();
  });

  // The first request through a fresh gateway (and its first TLS connection) pays for compiling
  // the code paths: measured from the second on.
  await call(gw.url, '/mute');
  await call(gw.url, '/hang');
  for (const [path, code, setting] of [['/mute', 'UPSTREAM_CONNECT_TIMEOUT', 300], ['/hang', 'UPSTREAM_TIMEOUT', 300]] as const) {
    loopLag.reset();
    const sent = performance.now();
    const res = await call(gw.url, path);
    const answered = performance.now();
    t.equal(res.status, 504, path);
    t.equal(res.json().code, code);
    // The timer started between the client sending and the upstream side seeing the attempt.
    t.ok(answered - sent >= setting, `${path}: not before the setting (${Math.round(answered - sent)} ms after the client sent)`);
    onTime(t, answered - startedAt, setting, path);
  }

  // Once the body started, a timeout can only cut the connection: measured from the last chunk
  // (body) or from the request's arrival (deadline) to the cut.
  const cut = (path: string): Promise<{ firstChunk: number; cut: number; start: number }> =>
    new Promise((resolve, reject) => {
      const start = performance.now();
      let firstChunk = 0;
      let last = 0;
      const req = request(`${gw.url}${path}`, { agent: false }, (res) => {
        res.on('data', () => {
          last = performance.now();
          if (firstChunk === 0) firstChunk = last;
        });
        res.on('end', () => reject(new Error('the response ended normally')));
        res.on('error', () => resolve({ firstChunk, cut: performance.now() - last, start: performance.now() - start }));
        res.on('aborted', () => undefined);
      });
      req.on('error', () => resolve({ firstChunk, cut: performance.now() - last, start: performance.now() - start }));
      req.end();
    });
  loopLag.reset();
  const paused = await cut('/pause');
  t.ok(paused.firstChunk > 0, 'the first chunk reached the client');
  onTime(t, paused.cut, 300, 'body timeout');
  loopLag.reset();
  const deadline = await cut('/dribble');
  t.ok(deadline.start >= 300, 'the deadline counts from the request\'s arrival, after the client sent it');
  // From the request's arrival to the cut, on the gateway's clock (the access line's duration).
  const accessLine = (): { ms: number } | undefined => {
    gw.gateway.flushLogs();
    return gw.logs.find((l) => l.msg === 'request completed' && l.path === '/dribble') as { ms: number } | undefined;
  };
  for (let i = 0; i < 50 && accessLine() === undefined; i++) await sleep(20);
  const line = accessLine();
  onTime(t, line?.ms ?? Infinity, 300, 'request deadline');
});

t.test('the body timeout does not run while the client is the one holding the response back', async (t) => {
  const size = 8 * 1024 * 1024;
  const up = await startUpstream((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': size });
    res.end(Buffer.alloc(size, 1));
  });
  const gw = await startGateway({ upstreams: { up: { targets: [up.url], timeouts: { bodyMs: 200 } } }, routes: [{ name: 'r', match: { prefix: '/' }, upstream: 'up' }] });
  t.teardown(async () => {
    await gw.close();
    await up.close();
  });
  const received = await new Promise<number>((resolve, reject) => {
    request(`${gw.url}/big`, { agent: false }, (res) => {
      let bytes = 0;
      // Reads nothing for 600 ms: the gateway's socket buffers fill and it stops reading the upstream.
      res.pause();
      setTimeout(() => {
        res.on('data', (c: Buffer) => (bytes += c.length));
        res.resume();
      }, 600);
      res.on('end', () => resolve(bytes));
      res.on('error', reject);
      res.on('aborted', () => reject(new Error('aborted')));
    })
      .on('error', reject)
      .end();
  });
  t.equal(received, size, 'the whole body arrived');
});

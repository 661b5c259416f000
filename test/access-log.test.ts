import { Writable } from 'node:stream';
import pino from 'pino';
import t from 'tap';
import type { FastifyBaseLogger } from 'fastify';
import type { RequestContext } from '../src/context';
import { AccessLog } from '../src/observability/access-log';

function collecting(): { log: FastifyBaseLogger; lines: () => Record<string, unknown>[] } {
  let text = '';
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      text += chunk.toString('utf8');
      done();
    },
  });
  const log = pino({ level: 'info' }, sink) as unknown as FastifyBaseLogger;
  return { log, lines: () => text.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>) };
}

const ctx = (id: string, path: string, upstreamMs = -1): RequestContext =>
  ({ id, path, route: { name: 'r' }, upstreamMs, clientIp: '10.0.0.1', errorCode: null }) as unknown as RequestContext;

t.test('access lines are whole JSON lines in order, whatever the path holds and however long it is', async (t) => {
  const { log, lines } = collecting();
  const access = new AccessLog(log);
  const long = '/long/' + 'x'.repeat(20000);
  access.write(ctx('a', '/api/users/1', 1.234), 'GET', 200, 3.005, false);
  access.write(ctx('b', '/caf\u00e9/\u00fcber/\u2603"q"\\'), 'POST', 404, 12, true);
  access.write(ctx('c', long), 'GET', 502, 0.5, false);
  for (let i = 0; i < 600; i++) access.write(ctx(`n${i}`, `/n/${i}`), 'GET', 200, i / 7, false);
  access.close();
  await new Promise((r) => setImmediate(r));
  const got = lines();
  t.equal(got.length, 603);
  t.match(got[0], { reqId: 'a', method: 'GET', path: '/api/users/1', status: 200, ms: 3.01, route: 'r', upstreamMs: 1.23, client: '10.0.0.1', msg: 'request completed' });
  t.match(got[1], { reqId: 'b', path: '/caf\u00e9/\u00fcber/\u2603"q"\\', status: 404, ms: 12, truncated: true });
  t.notOk('upstreamMs' in got[1], 'no upstream time when the upstream was not called');
  t.equal(got[2].path, long, 'a line longer than the batch room is written whole');
  t.same(got.slice(3).map((l) => l.reqId), Array.from({ length: 600 }, (_, i) => `n${i}`), 'batches keep the order');
  t.same(got.slice(3).map((l) => l.ms), Array.from({ length: 600 }, (_, i) => Math.round((i / 7) * 100) / 100), 'durations with two decimals');
});

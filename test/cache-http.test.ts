import t from 'tap';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { spawnSync } from 'node:child_process';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseAge, parseHttpDate, parseTargeted } from '../src/plugins/cache/http';
import { startGateway } from './helpers/gateway';

const at = (iso: string) => Date.parse(iso);

t.test('HTTP-date: the three forms of RFC 9110 §5.6.7 and nothing else', async (t) => {
  const want = at('1994-11-06T08:49:37Z');
  t.equal(parseHttpDate('Sun, 06 Nov 1994 08:49:37 GMT'), want, 'IMF-fixdate');
  t.equal(parseHttpDate('Sunday, 06-Nov-94 08:49:37 GMT', at('2026-01-01T00:00:00Z')), want, 'RFC 850');
  t.equal(parseHttpDate('Sun Nov  6 08:49:37 1994'), want, 'asctime (space-padded day)');
  for (const bad of [
    'Sun 06 Nov 1994 08:49:37 GMT',
    'Sun, 06 Nov 1994 08:49:37 UTC',
    'Sun, 06 Nov 1994 08:49:37 +0000',
    'Sun, 6 Nov 1994 08:49:37 GMT',
    'sun, 06 nov 1994 08:49:37 GMT',
    'Sun, 06 Nov 1994 08:49 GMT',
    'Sun, 31 Feb 1994 08:49:37 GMT',
    'Sun, 06 Nov 1994 24:00:00 GMT',
    ' Sun, 06 Nov 1994 08:49:37 GMT',
    '1994-11-06T08:49:37Z',
    '784111777',
    '0',
    '',
  ]) {
    t.ok(Number.isNaN(parseHttpDate(bad)), `refused: ${JSON.stringify(bad)}`);
  }
});

t.test('RFC 850 two-digit years: more than 50 years ahead means the previous century', async (t) => {
  const now = at('2026-06-01T00:00:00Z');
  t.equal(new Date(parseHttpDate('Thursday, 18-Aug-50 02:01:18 GMT', now)).getUTCFullYear(), 2050);
  t.equal(new Date(parseHttpDate('Thursday, 18-Aug-76 02:01:18 GMT', now)).getUTCFullYear(), 2076);
  t.equal(new Date(parseHttpDate('Thursday, 18-Aug-77 02:01:18 GMT', now)).getUTCFullYear(), 1977);
  t.equal(new Date(parseHttpDate('Thursday, 18-Aug-25 02:01:18 GMT', now)).getUTCFullYear(), 2025);
});

t.test('Age: delta-seconds, the first of a list, anything else ignored', async (t) => {
  t.equal(parseAge('30'), 30);
  t.equal(parseAge('30, 5'), 30);
  t.equal(parseAge(' 7 ,x'), 7);
  for (const bad of ['1.5', '-3', 'abc', '', '1e3', '0x10']) t.equal(parseAge(bad), 0, `ignored: ${bad}`);
  t.equal(parseAge(undefined), 0);
});

t.test('targeted fields parse as a Structured Fields Dictionary or not at all', async (t) => {
  t.equal(parseTargeted('max-age=60')?.maxAge, 60);
  t.equal(parseTargeted('no-store, max-age=60')?.noStore, true);
  t.equal(parseTargeted('max-age=60;foo=bar, must-revalidate')?.mustRevalidate, true);
  t.equal(parseTargeted('s-maxage=10, stale-if-error=5')?.staleIfError, 5);
  for (const bad of ['MAX-AGE=60', 'max-age=60;;', 'max age=60', 'max-age=', '=60', 'max-age="60', 'max-age=60,,private']) {
    t.equal(parseTargeted(bad), null, `invalid: ${bad}`);
  }
});

t.test('the two cache traps are warned about at load and by gateway validate', async (t) => {
  const config = {
    upstreams: { up: { targets: ['http://127.0.0.1:1'] } },
    auth: { jwt: { algorithms: ['HS256'], secret: 'a-test-secret-of-at-least-thirty-two-bytes' } },
    routes: [
      { name: 'fresh', match: { prefix: '/fresh' }, upstream: 'up', cache: {} },
      { name: 'authd', match: { prefix: '/authd' }, upstream: 'up', cache: { defaultTtl: 10 }, auth: { methods: ['jwt'] } },
      { name: 'fine', match: { prefix: '/fine' }, upstream: 'up', cache: { defaultTtl: 10, scope: 'consumer' }, auth: { methods: ['jwt'] } },
    ],
  };
  const gw = await startGateway(config as never);
  t.teardown(() => gw.close());
  const warned = gw.logs.filter((l) => l.level === 40 && typeof l.path === 'string').map((l) => l.path);
  t.same(warned, ['routes[0].cache.defaultTtl', 'routes[1].cache.scope'], 'one warning per trap, none for the consumer-scoped route');

  const dir = mkdtempSync(join(tmpdir(), 'gw-cache-'));
  const f = join(dir, 'g.yaml');
  writeFileSync(f, JSON.stringify(config));
  const out = spawnSync(process.execPath, ['--import', 'tsx', join(__dirname, '..', 'src', 'main.ts'), 'validate', f], { encoding: 'utf8', env: { ...process.env, PORT: '' } });
  t.equal(out.status, 0, 'a warning is no error');
  t.match(out.stdout, /valid \(3 routes, 1 upstreams\)/);
  t.match(out.stderr, /warnings:\n {2}routes\[0\]\.cache\.defaultTtl: only responses with explicit freshness/);
  t.match(out.stderr, /routes\[1\]\.cache\.scope: requests on this route carry credentials/);
  t.notMatch(out.stderr, /routes\[2\]/);
});

import { spawn, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import t from 'tap';
import { checkFloors, readFloors, type RatioSummary } from '../bench/guard';
import { renderReport, type ReportInput } from '../bench/report';
import { BARE, REFERENCE, SCENARIOS, roundOrder } from '../bench/scenarios';
import { formatWorkers, nodeHasReusePort } from '../bench/workers';

const ROOT = join(__dirname, '..');
const FLOORS = join(ROOT, 'bench', 'floors.json');

const summary = (name: string, vsReference: number | null, vsBare: number | null, errors = 0, non2xx = 0): RatioSummary => ({
  name,
  vsReference,
  vsBare,
  errors,
  non2xx,
});

t.test('checkFloors: ratios against floors, errors, unknown and skipped scenarios', async (t) => {
  const floors = { note: 'test', floors: { a: { vsReference: 1.0 }, b: { vsBare: 0.8 }, c: { vsBare: 0.5, allowNon2xx: true } } };
  const known = ['a', 'b', 'c', 'd'];
  const failedOf = (s: RatioSummary[], ran = ['a', 'b', 'c']) => checkFloors(floors, s, known, ran).filter((v) => !v.ok).map((v) => `${v.scenario} ${v.metric}`);

  t.same(failedOf([summary('a', 1.2, 1), summary('b', 0.9, 0.8), summary('c', 0.4, 0.6, 0, 10)]), [], 'at or above every floor');
  t.same(failedOf([summary('a', 0.99, 1), summary('b', 0.9, 0.79), summary('c', 0.4, 0.6)]), ['a vsReference', 'b vsBare']);
  t.same(failedOf([summary('a', 1.5, 1, 3), summary('b', 0.9, 0.9, 0, 1), summary('c', 1, 1, 0, 5)]), ['a errors', 'b non2xx'], 'fast failures never pass');
  t.same(failedOf([summary('a', null, 1), summary('b', 1, 1), summary('c', 1, 1)]), ['a vsReference'], 'an unmeasured ratio fails');
  t.same(failedOf([summary('a', 1.5, 1)], ['a']), [], 'scenarios left out with --only are skipped');
  t.same(failedOf([summary('a', 1.5, 1), summary('d', 0.1, 0.1, 2, 7)], ['a', 'd']), ['d errors', 'd non2xx'], 'a scenario without floors must still answer 2xx without errors');
  t.same(
    checkFloors({ note: '', floors: { gone: { vsBare: 1 } } }, [], known, []).map((v) => [v.ok, v.metric]),
    [[false, 'missing']],
    'a floor for a scenario that no longer exists fails',
  );
  const [verdict] = checkFloors(floors, [summary('a', 0.5, 1)], known, ['a']);
  t.equal(verdict.message, 'a vsReference 0.50 < floor 1.00');
});

t.test('roundOrder: every scenario once per round, the two baselines back to back and taking turns', async (t) => {
  const names = SCENARIOS.map((s) => s.name);
  const firsts = new Set<string>();
  const pairAt = new Set<number>();
  for (let round = 0; round < names.length + 2; round++) {
    const order = roundOrder(SCENARIOS, round).map((s) => s.name);
    t.same([...order].sort(), [...names].sort(), `round ${round}: each scenario exactly once`);
    const i = Math.min(order.indexOf(REFERENCE), order.indexOf(BARE));
    t.same(order.slice(i, i + 2).sort(), [BARE, REFERENCE].sort(), `round ${round}: the baselines run back to back`);
    t.equal(order[i], round % 2 === 0 ? REFERENCE : BARE, `round ${round}: the baselines take turns at going first`);
    firsts.add(order.find((n) => n !== REFERENCE && n !== BARE)!);
    pairAt.add(i);
  }
  t.ok(firsts.size > 1, 'the other scenarios rotate');
  t.ok(pairAt.size > 1, 'the pair moves through the round');
  t.same(
    roundOrder([{ name: BARE }, { name: REFERENCE }], 1).map((s) => s.name),
    [BARE, REFERENCE],
    'a run of the baselines alone (bare route first in odd rounds)',
  );
});

t.test('the committed floors file: says how it was derived, names real scenarios, guards the bare route', async (t) => {
  const floors = readFloors(FLOORS);
  t.match(floors.note, /median/i, 'the note explains the derivation');
  const names = SCENARIOS.map((s) => s.name);
  for (const name of Object.keys(floors.floors)) t.ok(names.includes(name), `${name} is a scenario`);
  t.ok(floors.floors[BARE]?.vsReference, `the bare gateway route has a floor against ${REFERENCE}`);
  for (const [name, f] of Object.entries(floors.floors)) {
    for (const v of [f.vsReference, f.vsBare]) if (v !== undefined) t.ok(v > 0 && v <= 2, `${name}: floor ${v} is a plausible ratio`);
  }
});

t.test('readFloors refuses what it does not understand', async (t) => {
  const dir = mkdtempSync(join(ROOT, '.tmp-ops-floors-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const write = (body: unknown) => {
    const f = join(dir, `${Math.random()}.json`);
    writeFileSync(f, JSON.stringify(body));
    return f;
  };
  t.throws(() => readFloors(write({ floors: {} })), /expected/);
  t.throws(() => readFloors(write({ note: 'x', floors: { gateway: { vsRef: 1 } } })), /floors\.gateway\.vsRef is not a known floor/);
  t.throws(() => readFloors(write({ note: 'x', floors: { gateway: { vsBare: -1 } } })), /floors\.gateway\.vsBare/);
});

const sample: ReportInput = {
  date: '2025-01-01T00:00:00.000Z',
  node: 'v20.0.0',
  reference: 'http-proxy',
  bare: 'gateway',
  options: { durationS: 3, rounds: 3, connections: 50 },
  scenarios: [
    { name: 'http-proxy', description: 'reference', rps: 1000, p50: 10, p99: 40, vsReference: 1, vsBare: 1.25, cpuUsPerReq: 150, errors: 0, non2xx: 0, rounds: [{ rps: 900 }, { rps: 1000 }, { rps: 1100 }] },
    { name: 'gateway', description: 'bare', rps: 800, p50: 12, p99: 50, vsReference: 0.8, vsBare: 1, bestVsReference: 0.85, bestVsBare: 1, cpuUsPerReq: 180, errors: 0, non2xx: 0, rounds: [{ rps: 800 }] },
    { name: 'x<script>', description: 'a "quoted" & <tagged> name', rps: 400, p50: 20, p99: 90, vsReference: 0.4, vsBare: 0.5, cpuUsPerReq: null, errors: 0, non2xx: 0, rounds: [{ rps: 400 }] },
  ],
  verdicts: [{ scenario: 'gateway', metric: 'vsReference', value: 0.8, floor: 0.9, ok: false, message: 'gateway vsReference 0.80 < floor 0.90' }],
};

t.test('the HTML chart is self-contained, escapes names and marks floors', async (t) => {
  const html = renderReport(sample);
  t.match(html, /^<!doctype html>/);
  t.equal((html.match(/<svg /g) ?? []).length, 5, 'throughput, two ratio charts, latency, CPU');
  t.notMatch(html, /<script|\bsrc=|\bhref=|url\(|@import|https?:/i, 'no script and nothing fetched from anywhere');
  t.match(html, /x&#60;script&#62;/, 'names are escaped');
  t.match(html, /bench:ci floors: FAILED/);
  t.match(html, /<title>floor 0\.90<\/title>/, 'the floor is drawn on the ratio chart');
  t.match(html, /gateway: × 0\.85/, 'the ratio chart draws best rounds, the statistic the floors apply to');
  t.match(html, /gateway vsReference 0\.80 &#60; floor 0\.90/);
});

/** Newest modification time of the .ts files under these folders. */
function newestSource(dirs: string[]): number {
  let newest = 0;
  for (const d of dirs) {
    for (const f of readdirSync(join(ROOT, d), { recursive: true }) as string[]) {
      if (f.endsWith('.ts')) newest = Math.max(newest, statSync(join(ROOT, d, f)).mtimeMs);
    }
  }
  return newest;
}

t.test('bench:ci fails when the gateway is slowed on purpose', async (t) => {
  // bench:ci is `npm run build && <run>`: CI builds before the tests, so the test runs <run> itself
  // and compiles only when dist/ is missing or older than the sources (a local run).
  const script = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).scripts['bench:ci'] as string;
  const [build, run] = script.split(' && ');
  t.equal(build, 'npm run build', 'bench:ci builds first');
  t.match(run, /^node dist\/bench\/run\.js .*--floors=bench\/floors\.json/);
  const built = join(ROOT, 'dist', 'bench', 'run.js');
  if (!existsSync(built) || statSync(built).mtimeMs < newestSource(['src', 'bench'])) {
    const tsc = spawnSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.json'], { cwd: ROOT, encoding: 'utf8', timeout: 110000 });
    t.equal(tsc.status, 0, `build: ${tsc.stdout}${tsc.stderr}`);
  }

  const dir = mkdtempSync(join(ROOT, '.tmp-ops-bench-'));
  t.teardown(() => rmSync(dir, { recursive: true, force: true }));
  const out = join(dir, 'ci.json');
  const html = join(dir, 'ci.html');
  // Short: one cold 1 s round of the bare route and its reference, each gateway request burning 50 ms
  // of event-loop time (at most 20 req/s; at a load average of 15 the cold reference measured 188 req/s
  // against the slowed gateway's 13, a ratio of 0.07). Later options override bench:ci's own.
  const [node, ...ciArgs] = run.split(' ');
  t.equal(node, 'node');
  const args = [...ciArgs, '--duration=1', '--rounds=1', '--warmup=0', '--retries=0', '--only=gateway', '--slow-gateway-us=50000', `--out=${out}`, `--html=${html}`];
  // Its own process group, so a bench that overruns is stopped with every server it started.
  const child = spawn(process.execPath, args, { cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'], detached: true });
  const killGroup = (signal: NodeJS.Signals) => {
    try {
      process.kill(-child.pid!, signal);
    } catch {
      // Already gone.
    }
  };
  t.teardown(() => killGroup('SIGKILL'));
  let output = '';
  child.stdout.on('data', (d: Buffer) => (output += d.toString()));
  child.stderr.on('data', (d: Buffer) => (output += d.toString()));
  const stopper = setTimeout(() => killGroup('SIGTERM'), 80000);
  const killer = setTimeout(() => killGroup('SIGKILL'), 90000);
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  clearTimeout(stopper);
  clearTimeout(killer);

  t.not(code, 0, 'bench:ci exits non-zero');
  t.match(output, /gateways slowed by 50000 µs per request/);
  t.match(output, /FAIL {2}gateway vsReference \d+\.\d\d < floor/, output);
  t.match(output, /bench:ci FAILED/);
  const result = JSON.parse(readFileSync(out, 'utf8')) as ReportInput;
  const verdict = result.verdicts!.find((v) => v.scenario === 'gateway' && v.metric === 'vsReference')!;
  t.equal(verdict.ok, false);
  t.ok(verdict.value! < verdict.floor!, `ratio ${verdict.value} below floor ${verdict.floor}`);
  t.same(result.scenarios.map((s) => s.name).sort(), ['gateway', 'http-proxy'], 'only the asked scenario and its baselines ran');
  t.match(readFileSync(html, 'utf8'), /bench:ci floors: FAILED/, 'the chart shows the failure too');
});

t.test('the workers comparison runs where Node has SO_REUSEPORT listeners, and its table shows both scaling figures', async (t) => {
  for (const v of ['22.12.0', '22.23.5', '23.1.0', '24.0.0', '25.2.1']) t.ok(nodeHasReusePort(v), v);
  for (const v of ['20.20.2', '22.11.0', '23.0.0', '21.7.3']) t.notOk(nodeHasReusePort(v), v);
  const table = formatWorkers({
    node: 'v22.23.5',
    cores: 2,
    rounds: 1,
    durationS: 1,
    cases: [
      { name: 'bare', description: '', rps1: 1000, rps2: 1500, pairedSpeedup: 1.5, gatewayCores1: 0.9, gatewayCores2: 1.5, upstreamCores2: 0.2, otherCores2: 0.3, efficiency: 0.9, errors: 0, non2xx: 0 },
    ],
  });
  t.match(table, /\| bare \| 1000 \| 1500 \| 1\.50 \| 0\.90 \/ 1\.50 \| 0\.20 \/ 0\.30 \| 0\.90 \| 1\.80 \| 0 \| 0 \|/);
});

const valgrindMissing = spawnSync('valgrind', ['--version']).status !== 0;

t.test('bench:instructions counts the instructions of a request of the bare route', { skip: valgrindMissing && 'valgrind not installed (apt-get install valgrind)' }, async (t) => {
  const script = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).scripts['bench:instructions'] as string;
  t.equal(script, 'npm run build && node dist/bench/instructions.js');
  const built = join(ROOT, 'dist', 'bench', 'instructions.js');
  if (!existsSync(built) || statSync(built).mtimeMs < newestSource(['src', 'bench'])) {
    const tsc = spawnSync(process.execPath, [require.resolve('typescript/bin/tsc'), '-p', 'tsconfig.json'], { cwd: ROOT, encoding: 'utf8', timeout: 110000 });
    t.equal(tsc.status, 0, `build: ${tsc.stdout}${tsc.stderr}`);
  }
  // Few requests: the JIT has not settled, so the count is several times a warm one's; the tool's
  // parts (valgrind, the counting switch, the dump) are what this checks.
  const run = spawnSync(process.execPath, [built, '--warmup=300', '--requests=200', '--connections=5'], { cwd: ROOT, encoding: 'utf8', timeout: 150000 });
  t.equal(run.status, 0, run.stderr);
  const m = /^gateway: (\d+) instructions per request, (\d+) without the optimising compiler \(200 requests counted after 300 \+ 75 to warm up, 5 connections\)$/m.exec(run.stdout);
  t.ok(m, run.stdout);
  const perRequest = Number(m?.[1]);
  const withoutCompiler = Number(m?.[2]);
  t.ok(perRequest > 50000 && perRequest < 20000000, `a plausible count: ${perRequest}`);
  // So soon after start-up the optimising compiler is busy: it is found in the dump and taken out.
  t.ok(withoutCompiler > 20000 && withoutCompiler < perRequest, `a plausible count without the compiler: ${withoutCompiler} of ${perRequest}`);
  const bad = spawnSync(process.execPath, [built, '--requests=0'], { cwd: ROOT, encoding: 'utf8' });
  t.equal(bad.status, 1);
  t.match(bad.stderr, /bad option --requests=0/);
});

import { execFileSync, spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { DIST, freePort, httpReady, startProcess, type Proc } from './harness';
import { NODE_FLAGS } from '../src/lifecycle/node-flags';

/**
 * Instructions per request of one server on the bench's bare route, counted by valgrind's callgrind.
 * On this shared 2-core machine wall-clock and CPU figures of identical runs differ by tens of
 * percent; instruction counts without the optimising compiler's share agree within about 0.5 %,
 * which makes them the measure for before/after decisions on the hot path (they do not see cache
 * and memory effects, so confirm a gain with `npm run bench`). The server runs under callgrind with
 * counting off, takes `--warmup` requests and a quarter as many again on new connections (the JIT
 * settles), then counts `--requests` requests; only user-space instructions of the server's process
 * are counted.
 *
 *   npm run bench:instructions -- [--server=gateway|http-proxy] [--warmup=30000] [--requests=10000] [--connections=20] [--tracing=RATIO,...] [--auth=external|introspection]
 *                                 [--targets=N] [--balance=round-robin|least-request|hash] [--hash-key=KEY]
 *
 * --tracing turns tracing on at that sample ratio, exporting to the bench upstream (which answers 200) in
 * full batches; "off" leaves it off. Several variants (`--tracing=off,0.01,1`) run one after the other,
 * each on a fresh server, and each is compared with the first.
 * --auth puts the route behind the external authorizer or token introspection, both played by the
 * bench upstream; every request carries one bearer token, so after the first one the decision is cached.
 * --targets gives the route's upstream N targets (distinct URLs of the one bench upstream, each with
 * its own pool: /t0, /t1, ...), balanced by --balance (hash on --hash-key, `path` by default), so
 * the balancers can be compared with each other on the same targets.
 */

interface Options {
  server: 'gateway' | 'http-proxy';
  warmup: number;
  requests: number;
  connections: number;
  /** Sample ratios to measure, one server each; -1: tracing off. */
  tracing: number[];
  auth: 'external' | 'introspection' | null;
  /** Targets of the upstream; 0: the bench upstream's URL as the one target (the bare route). */
  targets: number;
  balance: 'round-robin' | 'least-request' | 'hash';
  hashKey: string;
}

const BALANCES = ['round-robin', 'least-request', 'hash'] as const;

function parseArgs(argv: string[]): Options {
  const opts: Options = { server: 'gateway', warmup: 30000, requests: 10000, connections: 20, tracing: [-1], auth: null, targets: 0, balance: 'round-robin', hashKey: 'path' };
  for (const arg of argv) {
    const [k, v] = arg.replace(/^--/, '').split('=');
    if (k === 'server' && (v === 'gateway' || v === 'http-proxy')) opts.server = v;
    else if (k === 'tracing' && v !== undefined && v.split(',').every((r) => r === 'off' || (r !== '' && Number(r) >= 0 && Number(r) <= 1)))
      opts.tracing = v.split(',').map((r) => (r === 'off' ? -1 : Number(r)));
    else if (k === 'auth' && (v === 'external' || v === 'introspection')) opts.auth = v;
    else if (k === 'targets' && Number(v) > 0) opts.targets = Number(v);
    else if (k === 'balance' && (BALANCES as readonly string[]).includes(v)) opts.balance = v as Options['balance'];
    else if (k === 'hash-key' && v) opts.hashKey = v;
    else if ((k === 'warmup' || k === 'requests' || k === 'connections') && Number(v) > 0) opts[k] = Number(v);
    else
      throw new Error(
        `bad option ${arg} (known: --server=gateway|http-proxy --warmup=N --requests=N --connections=N --tracing=off|RATIO,... --auth=external|introspection --targets=N --balance=${BALANCES.join('|')} --hash-key=KEY)`,
      );
  }
  if (opts.balance !== 'round-robin' && opts.targets === 0) opts.targets = 4;
  return opts;
}

/** `cmd` is on the PATH (callgrind_annotate exits 255 on --version, so this does not run it). */
function hasCommand(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', 'command -v "$0"', cmd], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

/** Sends exactly `amount` requests (autocannon in its own process). */
function load(url: string, amount: number, connections: number, headers: string[]): Promise<void> {
  const bin = require.resolve('autocannon/autocannon.js');
  return new Promise((resolve, reject) => {
    // A server under callgrind on a loaded machine answers slowly: a request times out after 2 minutes, not autocannon's 10 s.
    const args = [bin, '-c', String(connections), '-a', String(amount), '-t', '120', '-j', ...headers.flatMap((h) => ['-H', h]), url];
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.on('exit', () => {
      try {
        const r = JSON.parse(out) as { errors: number; non2xx: number; requests: { total: number } };
        if (r.errors > 0 || r.non2xx > 0) reject(new Error(`${r.errors} errors and ${r.non2xx} non-2xx answers under load`));
        else resolve();
      } catch {
        reject(new Error('autocannon failed'));
      }
    });
  });
}

/** The instruction total of a callgrind dump, once the file is complete. */
async function dumpedTotal(file: string): Promise<number> {
  for (let i = 0; i < 600; i++) {
    if (existsSync(file)) {
      const m = /^totals: (\d+)/m.exec(readFileSync(file, 'utf8'));
      if (m) return Number(m[1]);
    }
    await sleep(100);
  }
  throw new Error(`callgrind wrote no dump to ${file}`);
}

interface Count {
  /** Instructions per request, every thread of the server. */
  total: number;
  /** Of which V8's optimising compilers (TurboFan and Maglev, on their background threads). */
  compiler: number;
}

/**
 * The instructions V8's optimising compilers spent in a dump (callgrind_annotate's per-function
 * totals). Under callgrind a server answers tens of times slower, so compilation that a real run
 * spreads over its first seconds, and work done on timers, weigh far more per request here: the
 * figure without them is the steadier one for comparing two versions of the request path.
 */
function compilerInstructions(file: string): number {
  const report = execFileSync('callgrind_annotate', ['--inclusive=no', '--threshold=100', file], { encoding: 'utf8', maxBuffer: 256 * 1024 * 1024 });
  let sum = 0;
  for (const line of report.split('\n')) {
    const m = /^\s*([\d,]+) \([^)]*\)\s+(.*)$/.exec(line);
    if (m && /v8::internal::(compiler|maglev)::/.test(m[2])) sum += Number(m[1].replaceAll(',', ''));
  }
  return sum;
}

/** Instructions per request of one server (the gateway with tracing at `tracing`, -1: off). */
async function measure(opts: Options, tracing: number): Promise<Count> {
  const dir = mkdtempSync(join(tmpdir(), 'gw-instructions-'));
  const procs: Proc[] = [];
  try {
    const upPort = await freePort();
    const upstreamUrl = `http://127.0.0.1:${upPort}`;
    procs.push(await startProcess('upstream', [join(DIST, 'bench/upstream.js'), String(upPort)], () => httpReady(`${upstreamUrl}/api/users/1`)));

    const port = await freePort();
    let serverArgs: string[];
    if (opts.server === 'gateway') {
      const file = join(dir, 'gateway.json');
      writeFileSync(
        file,
        JSON.stringify({
          listen: { host: '127.0.0.1', port },
          admin: { host: '127.0.0.1', port: await freePort() },
          shutdown: { drainDelayMs: 0 },
          upstreams: {
            users:
              opts.targets === 0
                ? { targets: [upstreamUrl] }
                : {
                    targets: Array.from({ length: opts.targets }, (_, i) => `${upstreamUrl}/t${i}`),
                    balance: opts.balance,
                    ...(opts.balance === 'hash' ? { hash: { key: opts.hashKey } } : {}),
                  },
          },
          routes: [{ name: 'users', match: { prefix: '/api/users' }, upstream: 'users', ...(opts.auth ? { auth: { methods: [opts.auth] } } : {}) }],
          // Under callgrind the server is tens of times slower: the one uncached call gets a larger time budget.
          ...(opts.auth === 'external' ? { auth: { external: { url: `${upstreamUrl}/authz`, identity: { consumerHeader: 'X-Auth-Consumer' }, timeoutMs: 10000 } } } : {}),
          ...(opts.auth === 'introspection' ? { auth: { introspection: { url: `${upstreamUrl}/introspect`, clientId: 'bench', clientSecret: 'bench-secret', timeoutMs: 10000 } } } : {}),
          // Exports leave when a batch of 512 spans is full, as they do on a busy gateway: the 5 s timer
          // runs in real time, and under callgrind (about 15 requests a second) it would charge a whole
          // export to every 75 requests instead of the thousands it covers at full speed.
          ...(tracing >= 0 ? { tracing: { enabled: true, endpoint: `${upstreamUrl}/v1/traces`, sampleRatio: tracing, export: { scheduledDelayMs: 3600000 } } } : {}),
        }),
      );
      serverArgs = [...NODE_FLAGS, join(DIST, 'src/main.js'), '--config', file];
    } else {
      serverArgs = [join(DIST, 'bench/reference.js'), String(port), upstreamUrl];
    }
    const out = join(dir, 'callgrind.out');
    const url = `http://127.0.0.1:${port}/api/users/123`;
    const server = await startProcess(
      opts.server,
      ['--tool=callgrind', '--instr-atstart=no', '--smc-check=all-non-file', `--callgrind-out-file=${out}`, process.execPath, ...serverArgs],
      () => httpReady(url),
      { PORT: '' },
      { command: 'valgrind', readyWithinMs: 600000 },
    );
    procs.push(server);
    const pid = String(server.child.pid);

    const headers = opts.auth ? ['authorization=Bearer bench-opaque-token'] : [];
    await load(url, opts.warmup, opts.connections, headers);
    // A second pass on new connections: code optimised while the first pass's sockets were the only
    // ones seen deoptimises on the first requests of new sockets (their objects are still of their
    // first shape) and is compiled again. Without this pass the counted one pays for that
    // recompilation, which varied by tens of thousands of instructions per request between runs.
    await load(url, Math.ceil(opts.warmup / 4), opts.connections, headers);
    execFileSync('callgrind_control', ['--instr=on', pid], { stdio: 'ignore' });
    await load(url, opts.requests, opts.connections, headers);
    execFileSync('callgrind_control', ['--dump', pid], { stdio: 'ignore' });
    const total = await dumpedTotal(`${out}.1`);
    return { total: Math.round(total / opts.requests), compiler: Math.round(compilerInstructions(`${out}.1`) / opts.requests) };
  } finally {
    for (const p of procs.reverse()) await p.stop();
    rmSync(dir, { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  for (const cmd of ['valgrind', 'callgrind_control', 'callgrind_annotate']) {
    if (!hasCommand(cmd)) throw new Error(`${cmd} is not installed (Debian: apt-get install valgrind)`);
  }
  let first: Count | null = null;
  for (const tracing of opts.tracing) {
    const count = await measure(opts, tracing);
    first ??= count;
    const label =
      (tracing >= 0 ? ` (tracing at ${tracing})` : opts.tracing.length > 1 ? ' (tracing off)' : '') +
      (opts.auth ? ` (auth: ${opts.auth}, cached)` : '') +
      (opts.targets > 0 ? ` (${opts.targets} targets, ${opts.balance}${opts.balance === 'hash' ? ` on ${opts.hashKey}` : ''})` : '');
    const steady = count.total - count.compiler;
    const delta = (a: number, b: number) => (count === first ? '' : ` (${a > b ? '+' : ''}${(((a - b) / b) * 100).toFixed(1)} % against the first)`);
    process.stdout.write(
      `${opts.server}${label}: ${count.total} instructions per request${delta(count.total, first.total)}, ${steady} without the optimising compiler${delta(steady, first.total - first.compiler)} ` +
        `(${opts.requests} requests counted after ${opts.warmup} + ${Math.ceil(opts.warmup / 4)} to warm up, ${opts.connections} connections)\n`,
    );
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`${err instanceof Error ? err.message : String(err)}\n`);
  process.exit(1);
});

import { generateKeyPairSync, sign } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { autocannon, cpuMicros, median, type Proc } from './harness';
import { startGatewayProcess, type RunningServer } from './scenarios';

/**
 * `workers: 2` against `workers: 1`, on routes that differ in how much of a request's CPU the
 * gateway spends. On a 2-core machine the load generator and the upstream run on the same cores as
 * the gateway, so two workers cannot have two cores to themselves: besides requests per second,
 * every round records the CPU each party used, and the scaling is judged per unit of gateway CPU.
 */

export interface WorkersCase {
  name: string;
  description: string;
  /** Median requests per second with one and with two workers. */
  rps1: number;
  rps2: number;
  /** Median over rounds of rps2 ÷ rps1 in the same round. */
  pairedSpeedup: number;
  /** Cores the gateway process kept busy (CPU seconds per second, all threads), medians. */
  gatewayCores1: number;
  gatewayCores2: number;
  /** Cores the upstream and everything else (the load generator, mostly) used in the two-worker rounds. */
  upstreamCores2: number;
  otherCores2: number;
  /**
   * Median over rounds of (requests per gateway CPU second with two workers) ÷ (the same with one):
   * 1 means a second worker costs nothing per request.
   */
  efficiency: number;
  errors: number;
  non2xx: number;
}

export interface WorkersSummary {
  node: string;
  cores: number;
  rounds: number;
  durationS: number;
  cases: WorkersCase[];
}

/** `workers` above 1 needs SO_REUSEPORT listeners: Node 22.12 or later (23.1 on the 23 line). */
export function nodeHasReusePort(version = process.versions.node): boolean {
  const [major, minor] = version.split('.').map(Number);
  return major > 23 || (major === 23 && minor >= 1) || (major === 22 && minor >= 12);
}

/** CPU ticks of the whole machine so far: busy and total, from /proc/stat. */
function machineTicks(): { busy: number; total: number } {
  const fields = readFileSync('/proc/stat', 'utf8').split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  const total = fields.slice(0, 8).reduce((a, b) => a + b, 0);
  // idle and iowait are the fourth and fifth fields.
  return { busy: total - fields[3] - fields[4], total };
}

/** An ES512 (P-521) key and a token it signed, made with node:crypto (not the gateway's code). */
function es512(): { publicKey: string; token: string } {
  const { publicKey, privateKey } = generateKeyPairSync('ec', { namedCurve: 'P-521' });
  const b64 = (v: unknown) => Buffer.from(JSON.stringify(v)).toString('base64url');
  const input = `${b64({ alg: 'ES512', typ: 'JWT' })}.${b64({ sub: 'bench-user', exp: Math.floor(Date.now() / 1000) + 3600 })}`;
  const signature = sign('sha512', Buffer.from(input), { key: privateKey, dsaEncoding: 'ieee-p1363' }).toString('base64url');
  return { publicKey: publicKey.export({ type: 'spki', format: 'pem' }) as string, token: `${input}.${signature}` };
}

interface CaseSpec {
  name: string;
  description: string;
  config: Record<string, unknown>;
  headers?: Record<string, string>;
}

function cases(upstreamUrl: string): CaseSpec[] {
  const route = { name: 'users', match: { prefix: '/api/users' }, upstream: 'users' };
  const upstreams = { users: { targets: [upstreamUrl] } };
  const key = es512();
  return [
    { name: 'bare', description: 'the bare route', config: { upstreams, routes: [route] } },
    {
      name: 'ratelimit-memory',
      description: 'the route with a memory-store rate limit that never rejects (two workers share one bucket table)',
      config: { upstreams, store: { type: 'memory' }, routes: [{ ...route, rateLimit: { limits: [{ rate: 1000000000, per: '1h' }] } }] },
    },
    {
      name: 'jwt-es512-nocache',
      description:
        'the route behind an ES512 JWT with the verification cache off: a P-521 signature check per request makes the gateway, not the load generator or the upstream, the one that needs the CPU, so two workers can show what a second core gives',
      config: { upstreams, auth: { jwt: { algorithms: ['ES512'], publicKey: key.publicKey, cache: { maxEntries: 0 } } }, routes: [{ ...route, auth: { methods: ['jwt'] } }] },
      headers: { authorization: `Bearer ${key.token}` },
    },
  ];
}

interface Sample {
  rps: number;
  gatewayCores: number;
  upstreamCores: number;
  otherCores: number;
  errors: number;
  non2xx: number;
}

/**
 * Each case with one and with two workers, `rounds` rounds, the two back to back in each round and
 * taking turns at going first. Returns null (and says why) where the running Node cannot listen
 * with SO_REUSEPORT, so that two workers would be one.
 */
export async function runWorkersBench(
  opts: { rounds: number; durationS: number; warmupS: number; connections: number },
  upstream: Proc,
  upstreamUrl: string,
  procs: Proc[],
  log: (line: string) => void,
): Promise<WorkersSummary | null> {
  if (!nodeHasReusePort()) {
    log(`workers: skipped, Node ${process.versions.node} has no SO_REUSEPORT listeners (run the bench on Node 22.12 or later)\n`);
    return null;
  }
  const out: WorkersCase[] = [];
  for (const c of cases(upstreamUrl)) {
    const servers: RunningServer[] = [];
    for (const workers of [1, 2]) {
      const s = await startGatewayProcess(`gateway-${c.name}-workers-${workers}`, (port, adminPort) => ({
        listen: { host: '127.0.0.1', port },
        admin: { host: '127.0.0.1', port: adminPort },
        shutdown: { drainDelayMs: 0 },
        ...c.config,
        workers,
      }));
      procs.push(...s.procs);
      servers.push(s);
    }
    const url = (i: number) => `${servers[i].baseUrl}/api/users/123`;
    const measure = async (i: number, durationS: number): Promise<Sample> => {
      const pid = servers[i].procs[0].child.pid;
      const [g0, u0, m0] = [cpuMicros(pid) ?? 0, cpuMicros(upstream.child.pid) ?? 0, machineTicks()];
      const started = process.hrtime.bigint();
      const r = await autocannon({ url: url(i), connections: opts.connections, durationS, headers: c.headers });
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const [g1, u1, m1] = [cpuMicros(pid) ?? 0, cpuMicros(upstream.child.pid) ?? 0, machineTicks()];
      const gatewayCores = (g1 - g0) / 1e6 / seconds;
      const upstreamCores = (u1 - u0) / 1e6 / seconds;
      // /proc/stat counts in USER_HZ ticks (100 a second): busy ticks ÷ 100 = CPU seconds of the whole machine.
      const machineCores = (m1.busy - m0.busy) / 100 / seconds;
      return { rps: r.rps, gatewayCores, upstreamCores, otherCores: Math.max(0, machineCores - gatewayCores - upstreamCores), errors: r.errors, non2xx: r.non2xx };
    };
    if (opts.warmupS > 0) for (const i of [0, 1]) await measure(i, opts.warmupS);
    const samples: [Sample, Sample][] = [];
    for (let round = 0; round < opts.rounds; round++) {
      const pair: Sample[] = [];
      for (const i of round % 2 === 0 ? [0, 1] : [1, 0]) pair[i] = await measure(i, opts.durationS);
      samples.push([pair[0], pair[1]]);
      const [a, b] = pair;
      log(
        `  round ${round + 1} ${c.name.padEnd(20)} 1 worker ${a.rps.toFixed(0).padStart(6)} req/s (${a.gatewayCores.toFixed(2)} cores)  ` +
          `2 workers ${b.rps.toFixed(0).padStart(6)} req/s (${b.gatewayCores.toFixed(2)} cores; upstream ${b.upstreamCores.toFixed(2)}, rest ${b.otherCores.toFixed(2)})\n`,
      );
    }
    const perCpu = (s: Sample) => s.rps / s.gatewayCores;
    out.push({
      name: c.name,
      description: c.description,
      rps1: median(samples.map(([a]) => a.rps)),
      rps2: median(samples.map(([, b]) => b.rps)),
      pairedSpeedup: median(samples.map(([a, b]) => b.rps / a.rps)),
      gatewayCores1: median(samples.map(([a]) => a.gatewayCores)),
      gatewayCores2: median(samples.map(([, b]) => b.gatewayCores)),
      upstreamCores2: median(samples.map(([, b]) => b.upstreamCores)),
      otherCores2: median(samples.map(([, b]) => b.otherCores)),
      efficiency: median(samples.map(([a, b]) => perCpu(b) / perCpu(a))),
      errors: samples.reduce((n, [a, b]) => n + a.errors + b.errors, 0),
      non2xx: samples.reduce((n, [a, b]) => n + a.non2xx + b.non2xx, 0),
    });
    for (const s of servers) await s.procs[0].stop();
  }
  return { node: process.version, cores: availableParallelism(), rounds: opts.rounds, durationS: opts.durationS, cases: out };
}

/** The summary as a Markdown table, with the two figures the README quotes per case. */
export function formatWorkers(w: WorkersSummary): string {
  const line = (cells: string[]) => `| ${cells.join(' | ')} |\n`;
  let t = line(['route', '1 worker req/s', '2 workers req/s', 'paired ×', 'gateway cores 1 / 2', 'upstream / rest cores (2)', 'req per gateway CPU-s, 2 ÷ 1', '2 × that', 'errors', 'non-2xx']);
  t += line(['---', '---:', '---:', '---:', '---:', '---:', '---:', '---:', '---:', '---:']);
  for (const c of w.cases) {
    t += line([
      c.name,
      c.rps1.toFixed(0),
      c.rps2.toFixed(0),
      c.pairedSpeedup.toFixed(2),
      `${c.gatewayCores1.toFixed(2)} / ${c.gatewayCores2.toFixed(2)}`,
      `${c.upstreamCores2.toFixed(2)} / ${c.otherCores2.toFixed(2)}`,
      c.efficiency.toFixed(2),
      (2 * c.efficiency).toFixed(2),
      String(c.errors),
      String(c.non2xx),
    ]);
  }
  return t;
}

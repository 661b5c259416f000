import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ROOT, DIST, autocannon, cpuMicros, freePort, httpReady, median, startProcess, type LoadResult, type Proc } from './harness';
import { BARE, REFERENCE, SCENARIOS, SERVERS, type BenchEnv, type RunningServer } from './scenarios';

interface Options {
  durationS: number;
  rounds: number;
  connections: number;
  warmupS: number;
  only: string[] | null;
  out: string;
}

function parseArgs(argv: string[]): Options {
  const opts: Options = {
    durationS: 5,
    rounds: 3,
    connections: 50,
    warmupS: 2,
    only: null,
    out: join(ROOT, 'bench', 'results', 'latest.json'),
  };
  for (const arg of argv) {
    const [k, v] = arg.replace(/^--/, '').split('=');
    switch (k) {
      case 'duration':
        opts.durationS = Number(v);
        break;
      case 'rounds':
        opts.rounds = Number(v);
        break;
      case 'connections':
        opts.connections = Number(v);
        break;
      case 'warmup':
        opts.warmupS = Number(v);
        break;
      case 'only':
        opts.only = v.split(',');
        break;
      case 'out':
        opts.out = v;
        break;
      default:
        throw new Error(`unknown option ${arg} (known: --duration=S --rounds=N --connections=N --warmup=S --only=a,b --out=FILE)`);
    }
  }
  return opts;
}

export interface ScenarioSummary {
  name: string;
  description: string;
  rps: number;
  p50: number;
  p99: number;
  errors: number;
  non2xx: number;
  vsReference: number | null;
  vsBare: number | null;
  /** Median CPU time of the serving process per request, in µs (null for the bare upstream). */
  cpuUsPerReq: number | null;
  rounds: Measured[];
}

type Measured = LoadResult & { cpuUsPerReq: number | null };

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  const wanted = new Set(opts.only ?? SCENARIOS.map((s) => s.name));
  // Ratios need their baselines measured in the same run.
  wanted.add(REFERENCE);
  wanted.add(BARE);
  const scenarios = SCENARIOS.filter((s) => wanted.has(s.name));
  const procs: Proc[] = [];
  const stopAll = async (): Promise<void> => {
    await Promise.all(procs.map((p) => p.stop()));
  };
  process.on('SIGINT', () => void stopAll().then(() => process.exit(130)));

  try {
    const upstreamPort = await freePort();
    procs.push(await startProcess('upstream', [join(DIST, 'bench/upstream.js'), String(upstreamPort)], () => httpReady(`http://127.0.0.1:${upstreamPort}/`)));
    const env: BenchEnv = { upstreamUrl: `http://127.0.0.1:${upstreamPort}` };
    const servers = new Map<string, RunningServer>();
    for (const name of new Set(scenarios.map((s) => s.server))) {
      const spec = SERVERS.find((s) => s.name === name);
      if (!spec) throw new Error(`scenario server ${name} is not defined`);
      const running = await spec.start(env);
      procs.push(...running.procs, ...(running.helpers ?? []));
      servers.set(name, running);
    }

    /** CPU the scenario's own processes spent per request: robust to a noisy machine, unlike req/s. */
    const cpuOf = (s: (typeof scenarios)[number]): number | null => {
      const pids = servers.get(s.server)!.procs.map((p) => p.child.pid);
      if (pids.length === 0) return null;
      let sum = 0;
      for (const pid of pids) sum += cpuMicros(pid) ?? NaN;
      return Number.isNaN(sum) ? null : sum;
    };
    const load = async (s: (typeof scenarios)[number], durationS: number): Promise<Measured> => {
      const before = cpuOf(s);
      const r = await autocannon({
        url: servers.get(s.server)!.baseUrl + s.path,
        connections: opts.connections,
        durationS,
        method: s.method,
        headers: s.headers,
        body: s.body,
      });
      const after = cpuOf(s);
      return { ...r, cpuUsPerReq: before !== null && after !== null && r.requests > 0 ? (after - before) / r.requests : null };
    };

    process.stdout.write(`bench: ${scenarios.length} scenarios, ${opts.rounds} interleaved rounds of ${opts.durationS}s at ${opts.connections} connections\n`);
    for (const s of scenarios) await load(s, opts.warmupS);

    const results = new Map<string, Measured[]>(scenarios.map((s) => [s.name, []]));
    for (let round = 0; round < opts.rounds; round++) {
      // Rotate the order each round so no scenario always runs right after the same neighbour.
      const order = scenarios.map((_, i) => scenarios[(i + round) % scenarios.length]);
      for (const s of order) {
        const r = await load(s, opts.durationS);
        results.get(s.name)!.push(r);
        const cpu = r.cpuUsPerReq === null ? '' : `  cpu ${r.cpuUsPerReq.toFixed(0)} µs/req`;
        process.stdout.write(`  round ${round + 1} ${s.name.padEnd(24)} ${r.rps.toFixed(0).padStart(7)} req/s  p99 ${r.p99} ms${cpu}\n`);
      }
    }

    const rpsOf = (name: string) => median(results.get(name)!.map((r) => r.rps));
    const refRps = rpsOf(REFERENCE);
    const bareRps = rpsOf(BARE);
    const summary: ScenarioSummary[] = scenarios.map((s) => {
      const rs = results.get(s.name)!;
      const rps = median(rs.map((r) => r.rps));
      return {
        name: s.name,
        description: s.description,
        rps,
        p50: median(rs.map((r) => r.p50)),
        p99: median(rs.map((r) => r.p99)),
        errors: rs.reduce((a, r) => a + r.errors, 0),
        non2xx: rs.reduce((a, r) => a + r.non2xx, 0),
        vsReference: refRps ? rps / refRps : null,
        vsBare: bareRps ? rps / bareRps : null,
        cpuUsPerReq: rs.every((r) => r.cpuUsPerReq !== null) ? median(rs.map((r) => r.cpuUsPerReq!)) : null,
        rounds: rs,
      };
    });

    const line = (cells: string[]) => `| ${cells.join(' | ')} |\n`;
    let table = line(['scenario', 'req/s', 'p50 ms', 'p99 ms', `× ${REFERENCE}`, `× ${BARE}`, 'CPU µs/req', 'errors', 'non-2xx']);
    table += line(['---', '---:', '---:', '---:', '---:', '---:', '---:', '---:', '---:']);
    for (const s of summary) {
      table += line([
        s.name,
        s.rps.toFixed(0),
        String(s.p50),
        String(s.p99),
        s.vsReference?.toFixed(2) ?? '-',
        s.vsBare?.toFixed(2) ?? '-',
        s.cpuUsPerReq?.toFixed(0) ?? '-',
        String(s.errors),
        String(s.non2xx),
      ]);
    }
    process.stdout.write(`\n${table}`);
    mkdirSync(join(opts.out, '..'), { recursive: true });
    writeFileSync(
      opts.out,
      JSON.stringify({ date: new Date().toISOString(), node: process.version, options: opts, reference: REFERENCE, bare: BARE, scenarios: summary }, null, 2),
    );
    process.stdout.write(`\nresults written to ${opts.out}\n`);
  } finally {
    await stopAll();
  }
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});

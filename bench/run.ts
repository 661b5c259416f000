import { mkdirSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { formatProtocols, runProtocols, type ProtocolResults } from './protocols';
import { ROOT, DIST, autocannon, cpuMicros, freePort, httpReady, median, startProcess, type LoadResult, type Proc } from './harness';
import { checkFloors, readFloors, type FloorsFile, type Verdict } from './guard';
import { renderReport } from './report';
import { BARE, REFERENCE, SCENARIOS, SERVERS, roundOrder, type BenchEnv, type RunningServer } from './scenarios';
import { runWebSocketBench, type WsSummary } from './websocket';
import { formatWorkers, runWorkersBench, type WorkersSummary } from './workers';

interface Options {
  durationS: number;
  rounds: number;
  connections: number;
  warmupS: number;
  only: string[] | null;
  out: string;
  /** Check the ratios against this floors file and exit 1 when one is missed (bench:ci). */
  floors: string | null;
  /** Measure scenarios that missed a floor (and their baselines) this many more times before failing. */
  retries: number;
  /** Also draw the results as a self-contained HTML page (true: next to the JSON). */
  html: string | true | null;
  /** Burn this many µs of CPU per request in every gateway process (proves the floors can fail). */
  slowGatewayUs: number | null;
  /** Run the WebSocket echo (gateway vs direct) after the HTTP scenarios. */
  websocket: boolean;
  /** Run the workers scaling comparison (two workers against one) after the HTTP scenarios. */
  workers: boolean;
}

/** The names --only takes for the WebSocket echo and the workers comparison, measured apart from the HTTP scenarios. */
const WEBSOCKET = 'websocket';
const WORKERS = 'workers';

function parseArgs(argv: string[]): Options {
  const opts: Options = {
    durationS: 5,
    rounds: 3,
    connections: 50,
    warmupS: 2,
    only: null,
    out: join(ROOT, 'bench', 'results', 'latest.json'),
    floors: null,
    retries: 0,
    html: null,
    slowGatewayUs: null,
    websocket: true,
    workers: true,
  };
  for (const arg of argv) {
    const [k, v] = arg.replace(/^--/, '').split('=');
    switch (k) {
      case 'floors':
        opts.floors = v;
        break;
      case 'retries':
        opts.retries = Number(v);
        break;
      case 'html':
        opts.html = v ?? true;
        break;
      case 'slow-gateway-us':
        opts.slowGatewayUs = Number(v);
        if (!(opts.slowGatewayUs > 0)) throw new Error(`--slow-gateway-us needs a positive number of microseconds, got ${v}`);
        break;
      case 'websocket':
      case 'workers':
        if (v !== 'on' && v !== 'off') throw new Error(`--${k} takes on or off, got ${v}`);
        opts[k] = v === 'on';
        break;
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
        throw new Error(
          `unknown option ${arg} (known: --duration=S --rounds=N --connections=N --warmup=S --only=a,b --out=FILE --html[=FILE] --floors=FILE --retries=N --slow-gateway-us=N --websocket=on|off --workers=on|off)`,
        );
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
  /**
   * Ratios of best rounds (highest req/s of the scenario ÷ highest of the baseline). On a shared
   * machine neighbours only ever slow a round down, so the best round is the least disturbed one;
   * bench:ci's floors apply to these.
   */
  bestVsReference: number | null;
  bestVsBare: number | null;
  /**
   * Median over rounds of the ratio within each round (the scenario's req/s ÷ the baseline's in the
   * same round, seconds apart): slow drifts of the machine cancel out of each pair.
   */
  pairedVsReference: number | null;
  pairedVsBare: number | null;
  /** Median CPU time of the serving process per request, in µs (null for the bare upstream). */
  cpuUsPerReq: number | null;
  rounds: Measured[];
}

type Measured = LoadResult & { cpuUsPerReq: number | null; round: number };

async function main(): Promise<void> {
  const opts = parseArgs(process.argv.slice(2));
  if (opts.only !== null) {
    opts.websocket &&= opts.only.includes(WEBSOCKET);
    opts.workers &&= opts.only.includes(WORKERS);
    opts.only = opts.only.filter((n) => n !== WEBSOCKET && n !== WORKERS);
  }
  const unknown = (opts.only ?? []).filter((n) => !SCENARIOS.some((s) => s.name === n));
  if (unknown.length) throw new Error(`unknown scenario ${unknown.join(', ')} (known: ${SCENARIOS.map((s) => s.name).join(', ')})`);
  const floors: FloorsFile | null = opts.floors ? readFloors(opts.floors) : null;
  if (opts.slowGatewayUs !== null) process.env.BENCH_SLOW_GATEWAY_US = String(opts.slowGatewayUs);
  const wanted = new Set(opts.only ?? SCENARIOS.map((s) => s.name));
  // Ratios need their baselines measured in the same run.
  wanted.add(REFERENCE);
  wanted.add(BARE);
  const scenarios = SCENARIOS.filter((s) => wanted.has(s.name));
  const procs: Proc[] = [];
  const stopAll = async (): Promise<void> => {
    await Promise.all(procs.map((p) => p.stop()));
  };
  // Interrupted or told to stop (a CI timeout): take the servers down too, never leave them behind.
  process.on('SIGINT', () => void stopAll().then(() => process.exit(130)));
  process.on('SIGTERM', () => void stopAll().then(() => process.exit(143)));

  let failed = false;
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
      return { ...r, cpuUsPerReq: before !== null && after !== null && r.requests > 0 ? (after - before) / r.requests : null, round: -1 };
    };

    const slowUs = process.env.BENCH_SLOW_GATEWAY_US;
    const slow = slowUs ? `, gateways slowed by ${slowUs} µs per request` : '';
    process.stdout.write(`bench: ${scenarios.length} scenarios, ${opts.rounds} interleaved rounds of ${opts.durationS}s at ${opts.connections} connections${slow}\n`);
    if (opts.warmupS > 0) for (const s of scenarios) await load(s, opts.warmupS);

    const results = new Map<string, Measured[]>(scenarios.map((s) => [s.name, []]));
    let roundNo = 0;
    const measure = async (list: typeof scenarios): Promise<void> => {
      for (let round = 0; round < opts.rounds; round++, roundNo++) {
        for (const s of roundOrder(list, round)) {
          const r = await load(s, opts.durationS);
          r.round = roundNo;
          results.get(s.name)!.push(r);
          const cpu = r.cpuUsPerReq === null ? '' : `  cpu ${r.cpuUsPerReq.toFixed(0)} µs/req`;
          process.stdout.write(`  round ${roundNo + 1} ${s.name.padEnd(24)} ${r.rps.toFixed(0).padStart(7)} req/s  p99 ${r.p99} ms${cpu}\n`);
        }
      }
    };
    const summarise = (): ScenarioSummary[] => {
      const rpsOf = (name: string) => median(results.get(name)!.map((r) => r.rps));
      const bestOf = (name: string) => Math.max(...results.get(name)!.map((r) => r.rps));
      const refRps = rpsOf(REFERENCE);
      const bareRps = rpsOf(BARE);
      const refBest = bestOf(REFERENCE);
      const bareBest = bestOf(BARE);
      const paired = (name: string, base: string): number | null => {
        const byRound = new Map((results.get(base) ?? []).map((r) => [r.round, r.rps]));
        const ratios = results
          .get(name)!
          .filter((r) => (byRound.get(r.round) ?? 0) > 0)
          .map((r) => r.rps / byRound.get(r.round)!);
        return ratios.length > 0 ? median(ratios) : null;
      };
      return scenarios.map((s) => {
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
          bestVsReference: refBest ? bestOf(s.name) / refBest : null,
          bestVsBare: bareBest ? bestOf(s.name) / bareBest : null,
          pairedVsReference: paired(s.name, REFERENCE),
          pairedVsBare: paired(s.name, BARE),
          cpuUsPerReq: rs.every((r) => r.cpuUsPerReq !== null) ? median(rs.map((r) => r.cpuUsPerReq!)) : null,
          rounds: rs,
        };
      });
    };
    const check = (summary: ScenarioSummary[]): Verdict[] =>
      floors
        ? checkFloors(
            floors,
            summary.map((x) => ({ ...x, vsReference: x.bestVsReference, vsBare: x.bestVsBare })),
            SCENARIOS.map((s) => s.name),
            scenarios.map((s) => s.name),
          )
        : [];

    await measure(scenarios);
    let summary = summarise();
    let verdicts = check(summary);
    // A shared machine has bad minutes: a missed ratio floor is measured again (with its baselines)
    // before it fails the run; the medians then cover every round. A real regression misses again.
    for (let retry = 0; retry < opts.retries; retry++) {
      const missed = new Set(verdicts.filter((v) => !v.ok && (v.metric === 'vsReference' || v.metric === 'vsBare')).map((v) => v.scenario));
      if (missed.size === 0) break;
      process.stdout.write(`floors missed by ${[...missed].join(', ')}: measuring again (${retry + 1}/${opts.retries})\n`);
      missed.add(REFERENCE).add(BARE);
      await measure(scenarios.filter((s) => missed.has(s.name)));
      summary = summarise();
      verdicts = check(summary);
    }

    const line = (cells: string[]) => `| ${cells.join(' | ')} |\n`;
    let table = line(['scenario', 'req/s', 'p50 ms', 'p99 ms', `× ${REFERENCE}`, `× ${BARE}`, 'best rounds × ref', 'best × bare', 'paired × ref', 'paired × bare', 'CPU µs/req', 'errors', 'non-2xx']);
    table += line(['---', '---:', '---:', '---:', '---:', '---:', '---:', '---:', '---:', '---:', '---:', '---:', '---:']);
    for (const s of summary) {
      table += line([
        s.name,
        s.rps.toFixed(0),
        String(s.p50),
        String(s.p99),
        s.vsReference?.toFixed(2) ?? '-',
        s.vsBare?.toFixed(2) ?? '-',
        s.bestVsReference?.toFixed(2) ?? '-',
        s.bestVsBare?.toFixed(2) ?? '-',
        s.pairedVsReference?.toFixed(2) ?? '-',
        s.pairedVsBare?.toFixed(2) ?? '-',
        s.cpuUsPerReq?.toFixed(0) ?? '-',
        String(s.errors),
        String(s.non2xx),
      ]);
    }
    process.stdout.write(`\n${table}`);
    let websocket: WsSummary | null = null;
    if (opts.websocket) {
      process.stdout.write(`\nwebsocket echo: ${opts.rounds} interleaved rounds of ${opts.durationS}s at ${opts.connections} sockets\n`);
      websocket = await runWebSocketBench(opts, procs, (l) => process.stdout.write(l));
      const cpu = websocket.gatewayCpuUsPerMsg === null ? '' : `, gateway CPU ${websocket.gatewayCpuUsPerMsg.toFixed(1)} µs per message`;
      process.stdout.write(
        `websocket echo: gateway ${websocket.gatewayMps.toFixed(0)} msg/s, direct ${websocket.directMps.toFixed(0)} msg/s, paired ratio ${websocket.pairedVsDirect.toFixed(2)}${cpu}, ${websocket.errors} errors\n`,
      );
    }
    let workers: WorkersSummary | null = null;
    if (opts.workers) {
      process.stdout.write(`\nworkers: 2 against 1, ${opts.rounds} interleaved rounds of ${opts.durationS}s at ${opts.connections} connections\n`);
      workers = await runWorkersBench(opts, procs[0], env.upstreamUrl, procs, (l) => process.stdout.write(l));
      if (workers) process.stdout.write(`\n${formatWorkers(workers)}`);
    }
    // HTTP/2 and gRPC need clients autocannon is not: measured apart, in full runs only (not bench:ci).
    let protocols: ProtocolResults | null = null;
    if (!floors && opts.only === null) {
      protocols = await runProtocols(opts.durationS, opts.connections);
      process.stdout.write(`\nHTTP/2 and gRPC (bench/protocols.ts):\n${formatProtocols(protocols)}\n`);
    }
    const result = {
      date: new Date().toISOString(),
      node: process.version,
      options: opts,
      reference: REFERENCE,
      bare: BARE,
      scenarios: summary,
      ...(websocket ? { websocket } : {}),
      ...(workers ? { workers } : {}),
      ...(floors ? { verdicts } : {}),
      ...(protocols ? { protocols } : {}),
    };
    mkdirSync(dirname(opts.out), { recursive: true });
    writeFileSync(opts.out, JSON.stringify(result, null, 2));
    process.stdout.write(`\nresults written to ${opts.out}\n`);
    if (opts.html !== null) {
      const file = opts.html === true ? opts.out.replace(/\.json$/, '') + '.html' : opts.html;
      mkdirSync(dirname(file), { recursive: true });
      writeFileSync(file, renderReport(result));
      process.stdout.write(`chart written to ${file}\n`);
    }
    if (floors) {
      process.stdout.write(`\nfloors (${opts.floors}), against the ratios of best rounds:\n`);
      for (const v of verdicts) process.stdout.write(`  ${v.ok ? 'pass' : 'FAIL'}  ${v.message}\n`);
      failed = verdicts.some((v) => !v.ok);
      process.stdout.write(failed ? '\nbench:ci FAILED: a scenario fell below its floor\n' : '\nbench:ci passed: every floor held\n');
    }
  } finally {
    await stopAll();
  }
  if (failed) process.exitCode = 1;
}

main().catch((err: unknown) => {
  process.stderr.write(`bench failed: ${(err as Error).stack ?? String(err)}\n`);
  process.exit(1);
});

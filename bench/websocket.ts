import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { createConnection } from 'node:net';
import { DIST, cpuMicros, freePort, median, startProcess, type Proc } from './harness';
import { startGatewayProcess } from './scenarios';

export interface WsRound {
  round: number;
  direct: number;
  gateway: number;
  /** CPU time of the gateway process per echoed message (µs), or null. */
  gatewayCpuUsPerMsg: number | null;
}

export interface WsSummary {
  description: string;
  connections: number;
  messageBytes: number;
  /** Median echoes per second over the rounds. */
  directMps: number;
  gatewayMps: number;
  /** Median over rounds of gateway ÷ direct in the same round. */
  pairedVsDirect: number;
  gatewayCpuUsPerMsg: number | null;
  errors: number;
  rounds: WsRound[];
}

const MESSAGE_BYTES = 128;

/** Something accepts TCP connections on `port`. */
function listening(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = createConnection({ host: '127.0.0.1', port }, () => {
      s.destroy();
      resolve(true);
    });
    s.on('error', () => resolve(false));
  });
}

/** One bounded run of bench/ws-load.js against `url`. */
function wsLoad(url: string, connections: number, durationS: number): Promise<{ messages: number; errors: number; mps: number }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [join(DIST, 'bench/ws-load.js'), url, String(connections), String(durationS), String(MESSAGE_BYTES)], {
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const killer = setTimeout(() => child.kill('SIGKILL'), (durationS + 30) * 1000);
    child.on('exit', (code) => {
      clearTimeout(killer);
      try {
        resolve(JSON.parse(out) as { messages: number; errors: number; mps: number });
      } catch {
        reject(new Error(`ws-load failed (${code}): ${err.slice(-2000)}`));
      }
    });
  });
}

/**
 * WebSocket echo through the gateway against straight to the upstream: `connections` sockets in
 * ping-pong with a ws echo server, rounds interleaved (direct and gateway back to back, taking
 * turns at going first). The gateway runs one route to the echo server, nothing else.
 */
export async function runWebSocketBench(
  opts: { rounds: number; durationS: number; warmupS: number; connections: number },
  procs: Proc[],
  log: (line: string) => void,
): Promise<WsSummary> {
  const upPort = await freePort();
  procs.push(await startProcess('ws-upstream', [join(DIST, 'bench/ws-upstream.js'), String(upPort)], () => listening(upPort)));
  const gateway = await startGatewayProcess('gateway-websocket', (port, adminPort) => ({
    listen: { host: '127.0.0.1', port },
    admin: { host: '127.0.0.1', port: adminPort },
    shutdown: { drainDelayMs: 0 },
    upstreams: { echo: { targets: [`http://127.0.0.1:${upPort}`] } },
    routes: [{ name: 'echo', match: { prefix: '/ws' }, upstream: 'echo' }],
  }));
  procs.push(...gateway.procs);
  const pid = gateway.procs[0].child.pid;
  const urls = { direct: `ws://127.0.0.1:${upPort}/ws`, gateway: `${gateway.baseUrl.replace(/^http/, 'ws')}/ws` };
  if (opts.warmupS > 0) for (const url of [urls.direct, urls.gateway]) await wsLoad(url, opts.connections, opts.warmupS);

  const rounds: WsRound[] = [];
  let errors = 0;
  for (let round = 0; round < opts.rounds; round++) {
    const r: WsRound = { round, direct: 0, gateway: 0, gatewayCpuUsPerMsg: null };
    for (const side of round % 2 === 0 ? (['direct', 'gateway'] as const) : (['gateway', 'direct'] as const)) {
      const before = side === 'gateway' ? cpuMicros(pid) : null;
      const m = await wsLoad(urls[side], opts.connections, opts.durationS);
      const after = side === 'gateway' ? cpuMicros(pid) : null;
      r[side] = m.mps;
      errors += m.errors;
      if (before !== null && after !== null && m.messages > 0) r.gatewayCpuUsPerMsg = (after - before) / m.messages;
    }
    rounds.push(r);
    const cpu = r.gatewayCpuUsPerMsg === null ? '' : `  gateway cpu ${r.gatewayCpuUsPerMsg.toFixed(1)} µs/msg`;
    log(`  round ${round + 1} websocket echo       direct ${r.direct.toFixed(0)} msg/s  gateway ${r.gateway.toFixed(0)} msg/s  (${(r.gateway / r.direct).toFixed(2)})${cpu}\n`);
  }
  const cpus = rounds.map((r) => r.gatewayCpuUsPerMsg);
  return {
    description: `WebSocket echo: ${opts.connections} sockets in ping-pong, ${MESSAGE_BYTES}-byte text messages, through the gateway vs straight to the ws echo server`,
    connections: opts.connections,
    messageBytes: MESSAGE_BYTES,
    directMps: median(rounds.map((r) => r.direct)),
    gatewayMps: median(rounds.map((r) => r.gateway)),
    pairedVsDirect: median(rounds.map((r) => r.gateway / r.direct)),
    gatewayCpuUsPerMsg: cpus.every((c) => c !== null) ? median(cpus as number[]) : null,
    errors,
    rounds,
  };
}

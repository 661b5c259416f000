/**
 * HTTP/2 and gRPC through the gateway (part of `npm run bench`, not bench:ci):
 *
 *   - HTTP/1.1 requests/s (autocannon, its own process) against HTTP/2 requests/s (h2c with prior
 *     knowledge, node:http2 sessions) on the same bare route to the same HTTP/1.1 upstream;
 *   - gRPC unary calls/s (@grpc/grpc-js) through the gateway against the same calls straight to
 *     the grpc-js upstream.
 *
 * The upstreams and the HTTP/2 and gRPC clients share this process, the gateway runs in its own:
 * the ratios are the point, not the absolute figures.
 *
 *   node dist/bench/protocols.js [--duration=3] [--concurrency=20]
 */
import { mkdtempSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { connect, type ClientHttp2Session } from 'node:http2';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { DIST, autocannon, freePort, httpReady, startProcess } from './harness';
import { NODE_FLAGS } from '../src/lifecycle/node-flags';

const raw = {
  serialize: (v: Buffer): Buffer => v,
  deserialize: (b: Buffer): Buffer => b,
};
const UNARY: grpc.ServiceDefinition = {
  Unary: { path: '/bench.Echo/Unary', requestStream: false, responseStream: false, requestSerialize: raw.serialize, requestDeserialize: raw.deserialize, responseSerialize: raw.serialize, responseDeserialize: raw.deserialize },
};

export interface ProtocolResults {
  http1Rps: number;
  http2Rps: number;
  grpcGatewayCps: number;
  grpcDirectCps: number;
}

/** Runs `fire` `concurrency` times in parallel for `seconds`, each restarting when it completes; answers per second. */
async function closedLoop(concurrency: number, seconds: number, fire: () => Promise<void>): Promise<number> {
  const until = Date.now() + seconds * 1000;
  let done = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (Date.now() < until) {
        await fire();
        done++;
      }
    }),
  );
  return done / seconds;
}

function h2get(session: ClientHttp2Session, path: string): Promise<void> {
  return new Promise((resolve, reject) => {
    const s = session.request({ ':path': path, ':authority': 'bench' });
    s.on('response', (h) => {
      if (h[':status'] !== 200) reject(new Error(`status ${String(h[':status'])}`));
    });
    s.on('error', reject);
    s.on('end', resolve);
    s.resume();
  });
}

export async function runProtocols(durationS: number, concurrency: number): Promise<ProtocolResults> {
  const body = Buffer.from(JSON.stringify({ id: 123, name: 'user' }));
  const upstream = createServer((_req, res) => {
    res.writeHead(200, { 'content-type': 'application/json', 'content-length': body.length });
    res.end(body);
  });
  await new Promise<void>((r) => upstream.listen(0, '127.0.0.1', r));
  const grpcServer = new grpc.Server();
  grpcServer.addService(UNARY, { Unary: (call: grpc.ServerUnaryCall<Buffer, Buffer>, cb: grpc.sendUnaryData<Buffer>) => cb(null, call.request) });
  const grpcPort = await new Promise<number>((resolve, reject) =>
    grpcServer.bindAsync('127.0.0.1:0', grpc.ServerCredentials.createInsecure(), (err, p) => (err ? reject(err) : resolve(p))),
  );
  const [port, h2cPort, adminPort] = [await freePort(), await freePort(), await freePort()];
  const dir = mkdtempSync(join(tmpdir(), 'gw-bench-proto-'));
  const file = join(dir, 'gateway.json');
  writeFileSync(
    file,
    JSON.stringify({
      listen: { host: '127.0.0.1', port, h2c: { port: h2cPort } },
      admin: { host: '127.0.0.1', port: adminPort },
      shutdown: { drainDelayMs: 0 },
      upstreams: {
        users: { targets: [`http://127.0.0.1:${(upstream.address() as AddressInfo).port}`] },
        echo: { targets: [`http://127.0.0.1:${grpcPort}`], protocol: 'grpc' },
      },
      routes: [
        { name: 'users', match: { prefix: '/api/users' }, upstream: 'users' },
        { name: 'echo', match: { prefix: '/bench.Echo' }, upstream: 'echo' },
      ],
    }),
  );
  const gateway = await startProcess('gateway', [...NODE_FLAGS, join(DIST, 'src/main.js'), '--config', file], () => httpReady(`http://127.0.0.1:${adminPort}/readyz`), { PORT: '' });
  const Client = grpc.makeGenericClientConstructor(UNARY, 'Echo');
  const viaGateway = new Client(`127.0.0.1:${h2cPort}`, grpc.credentials.createInsecure());
  const direct = new Client(`127.0.0.1:${grpcPort}`, grpc.credentials.createInsecure());
  const message = Buffer.from('{"id":123}');
  const call = (client: grpc.Client) => (): Promise<void> =>
    new Promise((resolve, reject) => client.makeUnaryRequest('/bench.Echo/Unary', raw.serialize, raw.deserialize, message, (err) => (err ? reject(err) : resolve())));
  try {
    const http1 = await autocannon({ url: `http://127.0.0.1:${port}/api/users/123`, connections: concurrency, durationS });
    // As many HTTP/2 connections as autocannon's are too many for HTTP/2: four sessions carry the streams.
    const sessions = await Promise.all(
      Array.from({ length: 4 }, () => new Promise<ClientHttp2Session>((resolve, reject) => {
        const s = connect(`http://127.0.0.1:${h2cPort}`);
        s.once('connect', () => resolve(s));
        s.once('error', reject);
      })),
    );
    let next = 0;
    await closedLoop(concurrency, 1, () => h2get(sessions[next++ % 4], '/api/users/123'));
    const http2Rps = await closedLoop(concurrency, durationS, () => h2get(sessions[next++ % 4], '/api/users/123'));
    for (const s of sessions) s.close();
    await closedLoop(concurrency, 1, call(direct));
    const grpcDirectCps = await closedLoop(concurrency, durationS, call(direct));
    await closedLoop(concurrency, 1, call(viaGateway));
    const grpcGatewayCps = await closedLoop(concurrency, durationS, call(viaGateway));
    return { http1Rps: http1.rps, http2Rps, grpcGatewayCps, grpcDirectCps };
  } finally {
    viaGateway.close();
    direct.close();
    await gateway.stop();
    grpcServer.forceShutdown();
    upstream.close();
  }
}

export function formatProtocols(r: ProtocolResults): string {
  const ratio = (a: number, b: number) => (b > 0 ? (a / b).toFixed(2) : 'n/a');
  return [
    `HTTP/1.1 through the gateway   ${r.http1Rps.toFixed(0)} req/s`,
    `HTTP/2 (h2c) through the gateway ${r.http2Rps.toFixed(0)} req/s   (HTTP/2 / HTTP/1.1 = ${ratio(r.http2Rps, r.http1Rps)})`,
    `gRPC unary direct              ${r.grpcDirectCps.toFixed(0)} calls/s`,
    `gRPC unary through the gateway ${r.grpcGatewayCps.toFixed(0)} calls/s   (gateway / direct = ${ratio(r.grpcGatewayCps, r.grpcDirectCps)})`,
  ].join('\n');
}

if (require.main === module) {
  const arg = (name: string, def: number): number => {
    const a = process.argv.find((x) => x.startsWith(`--${name}=`));
    return a ? Number(a.split('=')[1]) : def;
  };
  runProtocols(arg('duration', 3), arg('concurrency', 20)).then(
    (r) => console.log(formatProtocols(r)),
    (err: unknown) => {
      console.error(err);
      process.exit(1);
    },
  );
}

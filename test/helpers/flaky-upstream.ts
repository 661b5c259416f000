import type { IncomingMessage, ServerResponse } from 'node:http';
import { startUpstream, type SeenRequest, type TestUpstream } from './upstream';

/** How the upstream answers traffic (every path but the health path). */
export type Behaviour =
  | { kind: 'ok' }
  /** Answer this status with a small body. */
  | { kind: 'status'; status: number }
  /** Never answer (the connection stays open). */
  | { kind: 'hang' }
  /** Answer 200 after this long. */
  | { kind: 'delay'; ms: number }
  /** Close the connection without answering. */
  | { kind: 'reset' }
  /** Send the headers (Content-Length 1000, or chunked) and part of the body, then close the connection. */
  | { kind: 'reset-mid-body'; chunked?: boolean };

export interface FlakyUpstream {
  readonly url: string;
  readonly port: number;
  /** Traffic requests received (health probes excluded), across restarts. */
  readonly hits: number;
  /** Health probes received, across restarts. */
  readonly probes: number;
  /** Traffic requests received, in order, across restarts. */
  readonly seen: SeenRequest[];
  /** The behaviour for traffic from now on. */
  behave(b: Behaviour): void;
  /** The next `n` traffic requests get `b`, then the current behaviour applies again (a burst). */
  burst(n: number, b: Behaviour): void;
  /** Status the health path answers (200 by default); 0 makes the probe hang. */
  healthStatus: number;
  /** Stop listening and drop every connection: connections are refused until start(). */
  stop(): Promise<void>;
  /** Listen again on the same port. */
  start(): Promise<void>;
  /** Answers to requests left hanging are dropped. */
  close(): Promise<void>;
  server(): TestUpstream['server'];
}

/**
 * An HTTP upstream that misbehaves on command: refuses (stopped), resets before or during the
 * body, hangs, delays its headers, answers bursts of 5xx, and restarts on the same port.
 */
export async function startFlakyUpstream(opts: { healthPath?: string } = {}): Promise<FlakyUpstream> {
  const healthPath = opts.healthPath ?? '/health';
  let behaviour: Behaviour = { kind: 'ok' };
  const bursts: Behaviour[] = [];
  let hits = 0;
  let probes = 0;
  const hanging = new Set<ServerResponse>();

  const handler = (req: IncomingMessage, res: ServerResponse): void => {
    if (req.url === healthPath) {
      probes++;
      if (flaky.healthStatus === 0) {
        hanging.add(res);
        return;
      }
      res.writeHead(flaky.healthStatus, { 'content-type': 'text/plain' });
      res.end('health');
      return;
    }
    hits++;
    const b = bursts.shift() ?? behaviour;
    switch (b.kind) {
      case 'ok': {
        const body = JSON.stringify({ ok: true, n: hits, method: req.method, url: req.url, host: req.headers.host });
        res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
        res.end(body);
        return;
      }
      case 'status': {
        const body = `status ${b.status}`;
        res.writeHead(b.status, { 'content-type': 'text/plain', 'content-length': body.length });
        res.end(body);
        return;
      }
      case 'hang':
        hanging.add(res);
        return;
      case 'delay':
        setTimeout(() => {
          if (res.destroyed) return;
          res.writeHead(200, { 'content-type': 'text/plain', 'content-length': 7 });
          res.end('delayed');
        }, b.ms);
        return;
      case 'reset':
        req.socket.destroy();
        return;
      case 'reset-mid-body':
        res.writeHead(200, b.chunked ? { 'content-type': 'text/plain' } : { 'content-type': 'text/plain', 'content-length': 1000 });
        res.write('x'.repeat(100));
        setTimeout(() => req.socket.destroy(), 20);
        return;
    }
  };

  let current = await startUpstream(handler);
  const port = current.port;
  let previouslySeen: SeenRequest[] = [];

  const flaky: FlakyUpstream = {
    url: current.url,
    port,
    get hits() {
      return hits;
    },
    get probes() {
      return probes;
    },
    get seen() {
      return [...previouslySeen, ...current.seen.filter((s) => s.url !== healthPath)];
    },
    behave(b) {
      behaviour = b;
    },
    burst(n, b) {
      for (let i = 0; i < n; i++) bursts.push(b);
    },
    healthStatus: 200,
    async stop() {
      previouslySeen = flaky.seen;
      for (const r of hanging) r.destroy();
      hanging.clear();
      await current.close();
    },
    async start() {
      current = await startUpstream(handler, port);
    },
    async close() {
      for (const r of hanging) r.destroy();
      hanging.clear();
      if (current.server.listening) await current.close();
    },
    server: () => current.server,
  };
  return flaky;
}

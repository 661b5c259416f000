import { hostname } from 'node:os';
import { parentPort, workerData } from 'node:worker_threads';
import pino from 'pino';
import type { FastifyBaseLogger } from 'fastify';
import { checkReports } from '../admin/server';
import type { TargetAction } from '../admin/upstreams';
import { Gateway, PIPE_BUF } from '../app';
import type { Reply, Request, WorkerData } from './protocol';

/**
 * One worker thread of a gateway process (see pool.ts): a whole Gateway on the shared ports, without
 * an admin listener, answering the main thread's requests (reload, scrape, readiness, drain, ...).
 */
const data = workerData as WorkerData;
const port = parentPort!;
// Like the CLI's destination, but each write is whole lines of at most PIPE_BUF bytes, so the
// workers' lines never mix on a shared stdout pipe; each worker's lines stay in its own order.
const destination = pino.destination({ dest: 1, sync: false, minLength: 2048, maxWrite: PIPE_BUF });
setInterval(() => destination.flush(), 200).unref();
const logger = pino({ level: data.config.log.level, base: { pid: process.pid, hostname: hostname(), worker: data.index } }, destination);
const gateway = new Gateway(data.config, {
  logger: logger as unknown as FastifyBaseLogger,
  // Heap, event loop and process CPU are the main thread's to report (one process).
  processMetrics: false,
  worker: { port: data.port, tlsPort: data.tlsPort, buckets: data.buckets },
});

async function answer(req: Request): Promise<unknown> {
  switch (req.op) {
    case 'reload':
      return gateway.reload(req.config, req.actor);
    case 'metrics':
      return gateway.metrics.registry.getMetricsAsJSON();
    case 'ready':
      return checkReports(gateway.readinessChecks(), gateway.config);
    case 'info':
      return gateway.info.describe();
    case 'upstreams':
      return gateway.upstreamStatus();
    case 'route-traffic':
      return gateway.routeTraffic();
    case 'target':
      return gateway.targetAction(req.upstream, req.target, req.action as TargetAction) ?? null;
    case 'log-level':
      gateway.log.level = req.level;
      return req.level;
    case 'purge': {
      const store = gateway.gateStore();
      return store === null ? true : store.cacheBump(req.clock, req.keys);
    }
    case 'drain':
      await gateway.shutdown();
      gateway.flushLogs();
      destination.flushSync();
      // Whatever else a plugin left scheduled, the worker is done: the main thread waits for this exit.
      setImmediate(() => process.exit(0));
      return true;
  }
}

port.on('message', (req: Request) => {
  answer(req).then(
    (value) => port.postMessage({ id: req.id, ok: true, value } satisfies Reply),
    (err: unknown) => port.postMessage({ id: req.id, ok: false, error: (err as Error).message ?? String(err) } satisfies Reply),
  );
});

gateway.listen().then(
  ({ port: bound, tlsPort }) => port.postMessage({ id: 0, ok: true, value: { port: bound, tlsPort } } satisfies Reply),
  (err: unknown) => {
    logger.error({ err }, 'worker failed to start');
    destination.flushSync();
    // Thrown out of the worker: the main thread sees the error and the exit.
    throw err;
  },
);

import { Writable } from 'node:stream';
import pino from 'pino';
import type { FastifyBaseLogger } from 'fastify';
import { parseConfig } from '../../src/config/load';
import { WorkerPool } from '../../src/workers/pool';
import { withTestDefaults, type TestConfig } from './gateway';

export const TOKEN = 'workers-test-admin-token-0123456789';
export const auth = { authorization: `Bearer ${TOKEN}` };

export interface StartedPool {
  pool: WorkerPool;
  url: string;
  adminUrl: string;
  /** The main thread's log lines (workers write theirs to stdout). */
  logs: Record<string, unknown>[];
}

/** The file form of a test configuration with two workers (for reloads from a file). */
export function poolConfig(config: TestConfig): Record<string, unknown> {
  return withTestDefaults({ workers: 2, log: { level: 'warn' }, admin: { token: TOKEN }, ...config });
}

/** A real gateway process of two worker threads on 127.0.0.1:0, in this process. */
export async function startPool(config: TestConfig, configFile?: string): Promise<StartedPool> {
  const cfg = parseConfig(poolConfig(config), { env: {} });
  const logs: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      for (const line of chunk.toString('utf8').split('\n')) if (line) logs.push(JSON.parse(line) as Record<string, unknown>);
      cb();
    },
  });
  const pool = new WorkerPool(cfg, { logger: pino({ level: 'info' }, sink) as unknown as FastifyBaseLogger, configFile });
  const { port, adminPort } = await pool.listen();
  return { pool, url: `http://127.0.0.1:${port}`, adminUrl: `http://127.0.0.1:${adminPort}`, logs };
}

interface Handles {
  handles: { worker: { terminate(): Promise<number> }; call(r: unknown): Promise<{ name: string; values: { value: number }[] }[]> }[];
}

/** Requests each worker served, by its own registry (the test reaches into the pool: nothing else tells workers apart). */
export async function servedBy(pool: WorkerPool): Promise<number[]> {
  const all = await Promise.all((pool as unknown as Handles).handles.map((h) => h.call({ op: 'metrics' })));
  return all.map((m) => m.find((x) => x.name === 'gateway_requests_total')?.values.reduce((a, v) => a + v.value, 0) ?? 0);
}

/** Kills a worker thread the way a fatal error would: at once, mid-whatever. */
export function killWorker(pool: WorkerPool, index: number): Promise<number> {
  return (pool as unknown as Handles).handles[index].worker.terminate();
}

export const route = (name: string, prefix: string, extra: Record<string, unknown> = {}) => ({ name, match: { prefix }, upstream: 'u', ...extra });

import { Writable } from 'node:stream';
import pino from 'pino';
import { Gateway, type GatewayOptions } from '../../src/app';
import { parseConfig } from '../../src/config/load';
import type { GatewayConfig } from '../../src/config/schema';

export interface TestGateway {
  gateway: Gateway;
  url: string;
  port: number;
  adminUrl: string;
  /** Log lines the gateway wrote, parsed. */
  logs: Record<string, unknown>[];
  close(): Promise<void>;
}

/** Optional sections (auth.jwt, route auth, ...) are partial too: the loader fills their defaults. */
type DeepPartial<T> = { [K in keyof T]?: NonNullable<T[K]> extends object ? DeepPartial<NonNullable<T[K]>> : T[K] };

/**
 * Starts a real gateway on 127.0.0.1:0 (admin too) from a config object. The config goes through
 * the same validation as a file. Logs are captured instead of printed.
 */
export type TestConfig = DeepPartial<GatewayConfig> & Record<string, unknown>;

/** The test defaults: loopback, ephemeral ports, no drain delay. */
export function withTestDefaults(config: TestConfig): Record<string, unknown> {
  return {
    ...config,
    listen: { host: '127.0.0.1', port: 0, ...(config.listen as object) },
    admin: { host: '127.0.0.1', port: 0, ...(config.admin as object) },
    shutdown: { drainDelayMs: 0, ...(config.shutdown as object) },
  };
}

export async function startGateway(config: TestConfig, env: NodeJS.ProcessEnv = {}, opts: Pick<GatewayOptions, 'configFile' | 'plugins'> = {}): Promise<TestGateway> {
  const cfg = parseConfig(withTestDefaults(config), { env });
  const logs: Record<string, unknown>[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, cb) {
      // A line that is not JSON (a logfmt access line) is kept whole as `text`.
      for (const line of chunk.toString('utf8').split('\n')) if (line) logs.push(line.startsWith('{') ? (JSON.parse(line) as Record<string, unknown>) : { text: line });
      cb();
    },
  });
  const logger = pino({ level: cfg.log.level }, sink);
  const gateway = new Gateway(cfg, { logger, processMetrics: false, ...opts });
  const { port, adminPort } = await gateway.listen();
  return {
    gateway,
    url: `http://127.0.0.1:${port}`,
    port,
    adminUrl: `http://127.0.0.1:${adminPort}`,
    logs,
    close: () => gateway.close(),
  };
}

/** pino's numeric levels; access lines name their level as a word. */
const LEVELS: Record<string, number> = { trace: 10, debug: 20, info: 30, warn: 40, error: 50, fatal: 60 };

/** The level of a captured log line as pino's number, whether the line wrote it as a number or a word. */
export function levelOf(line: Record<string, unknown>): number {
  const l = line.level;
  return typeof l === 'number' ? l : typeof l === 'string' ? (LEVELS[l] ?? 0) : 0;
}

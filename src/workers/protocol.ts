import type { GatewayConfig } from '../config/schema';

/** What the main thread hands a worker thread at start (structured-cloned; the buffer is shared). */
export interface WorkerData {
  index: number;
  config: Readonly<GatewayConfig>;
  buckets: SharedArrayBuffer;
  /** Concrete ports to bind with SO_REUSEPORT (the first worker's, when listen.port is 0). */
  port?: number;
  tlsPort?: number;
}

/** Requests of the main thread to a worker; id 0 is the worker's unsolicited "listening" reply. */
export type Request = { id: number } & Call;

export type Call =
  | { op: 'reload'; config: Readonly<GatewayConfig>; actor: string }
  | { op: 'metrics' }
  | { op: 'ready' }
  | { op: 'info' }
  | { op: 'upstreams' }
  | { op: 'route-traffic' }
  | { op: 'target'; upstream: string; target: string; action: string }
  | { op: 'log-level'; level: string }
  | { op: 'purge'; clock: string; keys: readonly string[] }
  | { op: 'drain' };

export type Reply = { id: number } & ({ ok: true; value: unknown } | { ok: false; error: string });

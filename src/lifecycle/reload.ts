import type { GatewayConfig, RouteConfig } from '../config/schema';

export interface ReloadResult {
  routes: { added: string[]; removed: string[]; changed: string[]; unchanged: string[] };
  upstreams: { kept: string[]; created: string[]; closed: string[] };
  /** Sections that differ but only take effect on restart (listeners, logging, shared stores). */
  restartRequired: string[];
  /** Whether the TLS listener's certificate files had changed and were swapped in. */
  certificates: 'reloaded' | 'unchanged';
}

/** Sections a running process cannot swap: its sockets, its worker threads, its logger and its shared stores are built once. */
const RESTART_ONLY = ['listen', 'workers', 'admin', 'log', 'store'] as const;

/** Header size and client timeouts are options of the listening server; the body limit is per route and reloads. */
function listenerLimits(cfg: Readonly<GatewayConfig>): string {
  const { maxHeaderBytes, headersTimeoutMs, requestTimeoutMs, firstByteTimeoutMs } = cfg.policies.limits;
  return JSON.stringify([maxHeaderBytes, headersTimeoutMs, requestTimeoutMs, firstByteTimeoutMs]);
}

/** listen without what a reload swaps in: the TLS certificates, minimum version and client CA. */
function listenSockets(cfg: Readonly<GatewayConfig>): unknown {
  const tls = cfg.listen.tls;
  if (!tls) return cfg.listen;
  return { ...cfg.listen, tls: { port: tls.port, clientCertificates: tls.clientCertificates.mode } };
}

/** The tracer provider and its exporter are built when tracing is first on; enabled and the sample ratios reload. */
function tracingExport(cfg: Readonly<GatewayConfig>): string {
  const { enabled: _enabled, sampleRatio: _ratio, ...built } = cfg.tracing;
  return JSON.stringify(built);
}

export function restartOnlyChanges(before: Readonly<GatewayConfig>, after: Readonly<GatewayConfig>): string[] {
  const out: string[] = RESTART_ONLY.filter((k) =>
    k === 'listen' ? JSON.stringify(listenSockets(before)) !== JSON.stringify(listenSockets(after)) : JSON.stringify(before[k]) !== JSON.stringify(after[k]),
  );
  if (listenerLimits(before) !== listenerLimits(after)) out.push('policies.limits');
  if (before.tracing.enabled && after.tracing.enabled && tracingExport(before) !== tracingExport(after)) out.push('tracing');
  return out;
}

export function diffRoutes(before: readonly RouteConfig[], after: readonly RouteConfig[]): ReloadResult['routes'] {
  const old = new Map(before.map((r) => [r.name, JSON.stringify(r)]));
  const out: ReloadResult['routes'] = { added: [], removed: [], changed: [], unchanged: [] };
  for (const r of after) {
    const prev = old.get(r.name);
    if (prev === undefined) out.added.push(r.name);
    else (prev === JSON.stringify(r) ? out.unchanged : out.changed).push(r.name);
    old.delete(r.name);
  }
  out.removed = [...old.keys()];
  return out;
}

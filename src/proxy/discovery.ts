import { Resolver } from 'node:dns/promises';
import { isIP } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { FastifyBaseLogger } from 'fastify';
import type { UpstreamConfig } from '../config/schema';
import type { Resource } from '../plugins/types';
import type { ResilienceEvents } from './target-state';
import { targetSpec, type TargetSpec, type Upstream, type UpstreamRegistry } from './upstreams';

/** DNS answers that mean "no such address" rather than "the DNS is in trouble". */
const EMPTY_CODES = new Set(['ENODATA', 'ENOTFOUND']);

/** What one name resolved to last, and since when it answers nothing. */
interface NameState {
  /** The configured target this name comes from. */
  readonly url: URL;
  readonly basePath: string;
  readonly weight: number;
  /** The last good answer, as targets. */
  specs: TargetSpec[];
  /** When the name started answering no address (performance time), or -1. */
  emptySince: number;
  /** Failed or empty resolutions in a row. */
  failures: number;
  timer: NodeJS.Timeout | null;
}

type Answer = { specs: TargetSpec[]; ttlMs: number } | { empty: true } | { error: string };

/**
 * Keeps the targets of one upstream in step with DNS: each configured host name is resolved (A and
 * AAAA, or SRV) and re-resolved when its records' TTL runs out, clamped to [minTtlMs, maxTtlMs].
 * Every address is a target of its own. A failed resolution keeps the last good targets (and is
 * counted); a name that answers no address keeps its last targets for emptyKeepMs, then loses them.
 */
class UpstreamDiscovery {
  private readonly resolver: Resolver;
  private readonly cfg: UpstreamConfig['discovery'];
  private readonly names: NameState[] = [];
  /** Targets written as IP addresses: they need no resolving. */
  private readonly fixed: TargetSpec[] = [];
  private stopped = false;
  private resolvedOnce = false;

  constructor(
    private readonly upstream: Upstream,
    private readonly events: ResilienceEvents,
  ) {
    this.cfg = upstream.config.discovery;
    // Short tries: a name that does not answer keeps its last targets, and the next try is soon.
    this.resolver = new Resolver({ timeout: 1000, tries: 2 });
    if (this.cfg.servers.length > 0) this.resolver.setServers(this.cfg.servers);
    for (const entry of upstream.config.targets) {
      const spec = targetSpec(entry);
      const url = new URL(spec.url);
      if (isIP(url.hostname.replace(/^\[|\]$/g, '')) !== 0) this.fixed.push(spec);
      else {
        const basePath = url.pathname === '/' ? '' : url.pathname.replace(/\/$/, '');
        this.names.push({ url, basePath, weight: spec.weight, specs: [], emptySince: -1, failures: 0, timer: null });
      }
    }
  }

  /** Resolves every name once (the upstream's first targets), then keeps re-resolving on timers. */
  async start(): Promise<void> {
    await Promise.all(this.names.map((n) => this.refresh(n)));
    this.resolvedOnce = true;
    this.apply(true);
  }

  stop(): void {
    this.stopped = true;
    for (const n of this.names) if (n.timer !== null) clearTimeout(n.timer);
    this.resolver.cancel();
  }

  /** Resolves one name and schedules its next resolution; returns whether its targets changed. */
  private async refresh(n: NameState): Promise<boolean> {
    n.timer = null;
    const answer = await this.resolve(n);
    if (this.stopped) return false;
    const { minTtlMs, maxTtlMs, emptyKeepMs } = this.cfg;
    let next = minTtlMs;
    let changed = false;
    if ('specs' in answer) {
      n.emptySince = -1;
      n.failures = 0;
      changed = !sameSpecs(n.specs, answer.specs);
      n.specs = answer.specs;
      next = Math.min(maxTtlMs, Math.max(minTtlMs, answer.ttlMs));
    } else if ('empty' in answer) {
      const now = performance.now();
      if (n.emptySince < 0) n.emptySince = now;
      this.events.discoveryFailed(this.upstream.name, n.url.hostname, 'empty', ++n.failures);
      if (n.specs.length > 0 && now - n.emptySince >= emptyKeepMs) {
        n.specs = [];
        changed = true;
      }
    } else {
      this.events.discoveryFailed(this.upstream.name, n.url.hostname, answer.error, ++n.failures);
    }
    n.timer = setTimeout(() => void this.refresh(n).then((c) => c && this.apply(false)), next);
    n.timer.unref();
    return changed;
  }

  private async resolve(n: NameState): Promise<Answer> {
    const host = n.url.hostname;
    try {
      if (this.cfg.type === 'srv') {
        const records = await this.resolver.resolveSrv(host);
        if (records.length === 0) return { empty: true };
        // Only the most preferred priority takes traffic (RFC 2782); the others are its fallback in DNS.
        const top = Math.min(...records.map((r) => r.priority));
        const specs = records
          .filter((r) => r.priority === top)
          .map((r) => ({ url: `${n.url.protocol}//${hostPart(r.name)}:${r.port}${n.basePath}`, weight: Math.max(1, r.weight) }));
        // node:dns gives SRV records without their TTL.
        return { specs: sortSpecs(specs), ttlMs: this.cfg.maxTtlMs };
      }
      const port = n.url.port ? `:${n.url.port}` : '';
      const [v4, v6] = await Promise.allSettled([this.resolver.resolve4(host, { ttl: true }), this.resolver.resolve6(host, { ttl: true })]);
      const failed = [v4, v6].filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      const hard = failed.find((r) => !EMPTY_CODES.has((r.reason as { code?: string }).code ?? ''));
      if (hard !== undefined) {
        const e = hard.reason as { code?: string; message?: string };
        // One family answering is enough: the other may simply be refused by a small DNS server.
        if (failed.length === 2) return { error: e.code ?? String(e.message) };
      }
      const records = [v4, v6].flatMap((r) => (r.status === 'fulfilled' ? r.value : []));
      if (records.length === 0) return { empty: true };
      const specs = records.map((r) => ({ url: `${n.url.protocol}//${hostPart(r.address)}${port}${n.basePath}`, weight: n.weight }));
      return { specs: sortSpecs(specs), ttlMs: Math.min(...records.map((r) => r.ttl)) * 1000 };
    } catch (err) {
      const e = err as { code?: string; message?: string };
      if (EMPTY_CODES.has(e.code ?? '')) return { empty: true };
      return { error: e.code ?? String(e.message) };
    }
  }

  /** Hands the union of every name's targets to the upstream. */
  private apply(first: boolean): void {
    if (this.stopped || !this.resolvedOnce) return;
    const byUrl = new Map<string, TargetSpec>();
    for (const s of [...this.fixed, ...this.names.flatMap((n) => n.specs)]) if (!byUrl.has(s.url)) byUrl.set(s.url, s);
    this.upstream.setTargets([...byUrl.values()], first);
  }
}

/** A host as it goes in a URL: IPv6 addresses in brackets. */
function hostPart(host: string): string {
  return isIP(host) === 6 ? `[${host}]` : host.replace(/\.$/, '');
}

function sortSpecs(specs: TargetSpec[]): TargetSpec[] {
  return specs.sort((a, b) => (a.url < b.url ? -1 : a.url > b.url ? 1 : 0));
}

function sameSpecs(a: readonly TargetSpec[], b: readonly TargetSpec[]): boolean {
  return a.length === b.length && a.every((s, i) => s.url === b[i].url && s.weight === b[i].weight);
}

/**
 * DNS discovery of every upstream that asks for it: a Resource of the gateway, so the first
 * resolution happens before the listener opens and the timers stop when the gateway closes.
 */
export class TargetDiscovery implements Resource {
  readonly name = 'upstream-dns-discovery';
  private readonly running = new Map<Upstream, UpstreamDiscovery>();
  private started = false;

  constructor(
    registry: UpstreamRegistry,
    private readonly events: ResilienceEvents,
    private readonly log: FastifyBaseLogger,
  ) {
    this.add(registry);
  }

  private add(registry: UpstreamRegistry): UpstreamDiscovery[] {
    const added: UpstreamDiscovery[] = [];
    for (const up of registry.all()) {
      if (up.config.discovery.type === 'static' || this.running.has(up)) continue;
      const d = new UpstreamDiscovery(up, this.events);
      this.running.set(up, d);
      added.push(d);
      this.log.debug({ upstream: up.name, type: up.config.discovery.type }, 'DNS discovery on');
    }
    return added;
  }

  /** After a reload: resolve the new upstreams (before they see traffic), stop the ones that are gone. */
  async sync(registry: UpstreamRegistry): Promise<void> {
    const current = new Set(registry.all());
    for (const [up, d] of this.running) {
      if (current.has(up)) continue;
      d.stop();
      this.running.delete(up);
    }
    const added = this.add(registry);
    if (this.started) await Promise.all(added.map((d) => d.start()));
  }

  async init(): Promise<void> {
    this.started = true;
    await Promise.all([...this.running.values()].map((d) => d.start()));
  }

  async close(): Promise<void> {
    for (const d of this.running.values()) d.stop();
  }
}

import { isIP } from 'node:net';
import type { Step } from '../../chain';
import type { RequestContext } from '../../context';
import { GatewayError } from '../../errors';
import type { CompiledRoute } from '../../routes';
import type { Plugin, PluginContext } from '../types';
import { CidrSet } from './cidr';
import type { IpRulesConfig } from './schema';

export interface Cidr {
  address: string;
  prefix: number;
}

/** Parses `10.0.0.0/8`, `2001:db8::/32` or a bare address; null when it is neither. */
export function parseCidr(entry: string): Cidr | null {
  const slash = entry.indexOf('/');
  const address = slash < 0 ? entry : entry.slice(0, slash);
  const version = isIP(address);
  if (version === 0) return null;
  const max = version === 4 ? 32 : 128;
  const bits = slash < 0 ? String(max) : entry.slice(slash + 1);
  if (!/^\d{1,3}$/.test(bits) || Number(bits) > max) return null;
  return { address, prefix: Number(bits) };
}

function cidrSet(entries: readonly string[]): CidrSet | null {
  if (entries.length === 0) return null;
  const set = new CidrSet();
  for (const e of entries) {
    const c = parseCidr(e)!;
    set.add(c.address, c.prefix);
  }
  return set;
}

/**
 * Deny wins over allow; a non-empty allow list admits nobody else. An IPv4-mapped IPv6 peer
 * (::ffff:10.1.2.3) matches IPv4 ranges, so dual-stack listeners need no special case.
 */
export class IpRules {
  private readonly allow: CidrSet | null;
  private readonly deny: CidrSet | null;

  constructor(cfg: IpRulesConfig) {
    this.allow = cidrSet(cfg.allow);
    this.deny = cidrSet(cfg.deny);
  }

  get empty(): boolean {
    return this.allow === null && this.deny === null;
  }

  permits(ip: string): boolean {
    if (this.deny !== null && this.deny.has(ip)) return false;
    return this.allow === null || this.allow.has(ip);
  }
}

class IpRulesStep implements Step {
  readonly name = 'ip-rules';
  constructor(private readonly rules: IpRules) {}

  run(ctx: RequestContext): boolean {
    if (this.rules.permits(ctx.clientIp)) return true;
    throw new GatewayError('FORBIDDEN', { detail: 'The client address is not allowed on this route' });
  }
}

/** IP allow/deny lists: the route's own, or the global ones. Runs before authentication. */
export function ipRulesPlugin(ctx: PluginContext): Plugin {
  const global = new IpRules(ctx.config.policies.ipRules);
  const globalStep = global.empty ? null : new IpRulesStep(global);
  return {
    name: 'ip-rules',
    stepFor(route: CompiledRoute): Step | null {
      const own = route.config.policies.ipRules;
      if (own === undefined) return globalStep;
      const rules = new IpRules(own);
      return rules.empty ? null : new IpRulesStep(rules);
    },
  };
}

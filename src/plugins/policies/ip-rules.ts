import { BlockList, isIP } from 'node:net';
import type { Step } from '../../chain';
import type { RequestContext } from '../../context';
import { GatewayError } from '../../errors';
import type { CompiledRoute } from '../../routes';
import type { Plugin, PluginContext } from '..';
import type { IpRulesConfig } from './schema';

export interface Cidr {
  address: string;
  prefix: number;
  family: 'ipv4' | 'ipv6';
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
  return { address, prefix: Number(bits), family: version === 4 ? 'ipv4' : 'ipv6' };
}

function blockList(entries: readonly string[]): BlockList | null {
  if (entries.length === 0) return null;
  const list = new BlockList();
  for (const e of entries) {
    const c = parseCidr(e)!;
    list.addSubnet(c.address, c.prefix, c.family);
  }
  return list;
}

/**
 * Deny wins over allow; a non-empty allow list admits nobody else. BlockList matches an
 * IPv4-mapped IPv6 peer (::ffff:10.1.2.3) against IPv4 ranges, so dual-stack listeners need no
 * special case.
 */
export class IpRules {
  private readonly allow: BlockList | null;
  private readonly deny: BlockList | null;

  constructor(cfg: IpRulesConfig) {
    this.allow = blockList(cfg.allow);
    this.deny = blockList(cfg.deny);
  }

  get empty(): boolean {
    return this.allow === null && this.deny === null;
  }

  permits(ip: string): boolean {
    if (ip === '') return this.allow === null;
    const family = ip.includes(':') ? 'ipv6' : 'ipv4';
    if (this.deny !== null && this.deny.check(ip, family)) return false;
    return this.allow === null || this.allow.check(ip, family);
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

import type { Step } from '../../chain';
import type { RequestContext } from '../../context';
import { HOP_BY_HOP, REQUEST_DROP } from '../../proxy/headers';
import type { CompiledRoute } from '../../routes';
import type { Plugin } from '../types';
import type { HeaderRulesConfig } from './schema';
import { compileTemplate, render, type HeaderValue } from './template';

/** Request headers no rule may touch: the relay owns them, and framing depends on them. */
export const REQUEST_RESERVED: ReadonlySet<string> = new Set([...REQUEST_DROP, 'content-length']);
/** Response headers no rule may touch: framing and the gateway's own request id. */
export const RESPONSE_RESERVED: ReadonlySet<string> = new Set([...HOP_BY_HOP, 'content-length', 'x-request-id']);

function isEmpty(rules: HeaderRulesConfig): boolean {
  return rules.remove.length === 0 && Object.keys(rules.rename).length === 0 && Object.keys(rules.set).length === 0 && Object.keys(rules.add).length === 0;
}

interface Compiled {
  /** Lower-case names whose values go (removed, renamed away, or replaced). */
  drop: Set<string>;
  /** Lower-case old name → new name. */
  rename: Map<string, string>;
  /** Headers to write: set and add values (a set name is in `drop` too). */
  write: [string, HeaderValue][];
}

function compile(rules: HeaderRulesConfig, routeName: string): Compiled {
  const drop = new Set(rules.remove.map((n) => n.toLowerCase()));
  const rename = new Map<string, string>();
  for (const [from, to] of Object.entries(rules.rename)) {
    drop.add(from.toLowerCase());
    rename.set(from.toLowerCase(), to);
  }
  const write: [string, HeaderValue][] = [];
  for (const [name, value] of Object.entries(rules.set)) {
    drop.add(name.toLowerCase());
    write.push([name, compileTemplate(value, routeName)]);
  }
  for (const [name, value] of Object.entries(rules.add)) write.push([name, compileTemplate(value, routeName)]);
  return { drop, rename, write };
}

/**
 * Request rules. Removed, renamed and replaced headers join the route's drop list at start-up, so
 * the relay never copies them; this step adds the renamed and set values just before the relay.
 */
class RequestHeaderStep implements Step {
  readonly name = 'request-headers';
  private readonly rename: [string, string][];

  constructor(private readonly rules: Compiled) {
    this.rename = [...rules.rename];
  }

  run(ctx: RequestContext): boolean {
    if (this.rename.length !== 0) {
      const raw = ctx.req.rawHeaders;
      for (let i = 0; i < raw.length; i += 2) {
        const lower = raw[i].toLowerCase();
        for (const [from, to] of this.rename) if (from === lower) ctx.addUpstreamHeader(to, raw[i + 1]);
      }
    }
    for (const [name, value] of this.rules.write) {
      const v = render(value, ctx);
      if (v !== null) ctx.addUpstreamHeader(name, v);
    }
    return true;
  }
}

function responseTransform(rules: Compiled) {
  return (ctx: RequestContext, _status: number, headers: string[]): null => {
    let w = 0;
    for (let r = 0; r < headers.length; r += 2) {
      const lower = headers[r].toLowerCase();
      const to = rules.rename.get(lower);
      if (to !== undefined) {
        headers[w++] = to;
        headers[w++] = headers[r + 1];
        continue;
      }
      if (rules.drop.has(lower)) continue;
      headers[w++] = headers[r];
      headers[w++] = headers[r + 1];
    }
    headers.length = w;
    for (const [name, value] of rules.write) {
      const v = render(value, ctx);
      if (v !== null) headers.push(name, v);
    }
    return null;
  };
}

/** Header rules of a route: request side as the last step before the relay, response side in the relay. */
export function headerRulesPlugin(): Plugin {
  return {
    name: 'header-rules',
    stepFor(route: CompiledRoute): Step | null {
      const { request, response } = route.config.policies.headers;
      if (!isEmpty(response)) route.addResponseTransform(responseTransform(compile(response, route.name)));
      if (isEmpty(request)) return null;
      const rules = compile(request, route.name);
      for (const name of rules.drop) route.dropRequestHeaders.add(name);
      return new RequestHeaderStep(rules);
    },
  };
}

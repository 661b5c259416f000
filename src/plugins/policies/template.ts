import type { RequestContext } from '../../context';

/**
 * Header value templates: {requestId}, {consumerId}, {clientIp} and {route}. The route name is
 * known at start-up and substituted then; the rest are read per request.
 */

const PLACEHOLDER = /\{([A-Za-z]+)\}/g;

const PER_REQUEST: Record<string, (ctx: RequestContext) => string> = {
  requestId: (ctx) => ctx.id,
  consumerId: (ctx) => ctx.identity?.consumerId ?? '',
  clientIp: (ctx) => ctx.clientIp,
};

export const TEMPLATE_NAMES: readonly string[] = [...Object.keys(PER_REQUEST), 'route'];

/** Placeholders a value uses that are not known, for config checks. */
export function unknownPlaceholders(value: string): string[] {
  const out: string[] = [];
  for (const m of value.matchAll(PLACEHOLDER)) if (!TEMPLATE_NAMES.includes(m[1])) out.push(m[0]);
  return out;
}

/** A compiled value: a constant, or a function giving the value or null when a part of it is empty. */
export type HeaderValue = string | ((ctx: RequestContext) => string | null);

export function compileTemplate(value: string, routeName: string): HeaderValue {
  const literals: string[] = [];
  const getters: ((ctx: RequestContext) => string)[] = [];
  let last = 0;
  let pending = '';
  for (const m of value.matchAll(PLACEHOLDER)) {
    pending += value.slice(last, m.index);
    last = m.index + m[0].length;
    if (m[1] === 'route') {
      pending += routeName;
      continue;
    }
    literals.push(pending);
    pending = '';
    getters.push(PER_REQUEST[m[1]]);
  }
  pending += value.slice(last);
  if (getters.length === 0) return pending;
  literals.push(pending);
  return (ctx) => {
    let out = literals[0];
    for (let i = 0; i < getters.length; i++) {
      const v = getters[i](ctx);
      if (v === '') return null;
      out += v + literals[i + 1];
    }
    return out;
  };
}

export function render(value: HeaderValue, ctx: RequestContext): string | null {
  return typeof value === 'string' ? value : value(ctx);
}

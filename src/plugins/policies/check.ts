import type { ConfigProblem, GatewayConfig } from '../types';
import { ORIGIN_PATTERN } from './cors';
import { ISO_DATE_TIME } from './deprecation';
import { REQUEST_RESERVED, RESPONSE_RESERVED } from './header-rules';
import { parseCidr } from './ip-rules';
import type { CorsConfig, DeprecationConfig, HeaderRulesConfig, IpRulesConfig, PoliciesConfig, RoutePoliciesConfig } from './schema';
import { TEMPLATE_NAMES, unknownPlaceholders } from './template';

/** RFC 9110 token: what a header name may be made of. */
const TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/;
/** What Node accepts in a header value: no CR, LF, NUL or other control characters, nothing past Latin-1. */
const FIELD_VALUE = /^[\t\x20-\x7e\x80-\xff]*$/;

function key(path: string, name: string): string {
  return /^[A-Za-z_$][A-Za-z0-9_$]*$/.test(name) ? `${path}.${name}` : `${path}[${JSON.stringify(name)}]`;
}

function checkHeaderName(name: string, path: string, problems: ConfigProblem[]): boolean {
  if (TOKEN.test(name)) return true;
  problems.push({ path, message: `"${name}" is not a valid header name` });
  return false;
}

function checkRules(rules: HeaderRulesConfig, path: string, reserved: ReadonlySet<string>, problems: ConfigProblem[]): void {
  const seen = new Map<string, string>();
  const name = (n: string, at: string): void => {
    if (!checkHeaderName(n, at, problems)) return;
    const lower = n.toLowerCase();
    if (reserved.has(lower)) {
      problems.push({ path: at, message: `"${n}" is managed by the gateway; header rules cannot change it` });
      return;
    }
    const other = seen.get(lower);
    if (other !== undefined) problems.push({ path: at, message: `"${n}" already appears in another rule (${other}); a header may appear in one rule only` });
    else seen.set(lower, at);
  };
  const value = (v: string, at: string): void => {
    if (!FIELD_VALUE.test(v)) {
      problems.push({ path: at, message: 'a header value may not contain CR, LF or other control characters, nor characters beyond Latin-1' });
    }
    const unknown = unknownPlaceholders(v);
    if (unknown.length) {
      problems.push({ path: at, message: `unknown placeholder ${unknown.join(', ')}; use ${TEMPLATE_NAMES.map((n) => `{${n}}`).join(', ')}` });
    }
  };
  rules.remove.forEach((n, i) => name(n, `${path}.remove[${i}]`));
  for (const [from, to] of Object.entries(rules.rename)) {
    const at = key(`${path}.rename`, from);
    name(from, at);
    name(to, at);
  }
  for (const [n, v] of Object.entries(rules.set)) {
    name(n, key(`${path}.set`, n));
    value(v, key(`${path}.set`, n));
  }
  for (const [n, v] of Object.entries(rules.add)) {
    name(n, key(`${path}.add`, n));
    value(v, key(`${path}.add`, n));
  }
}

function checkIpRules(rules: IpRulesConfig, path: string, problems: ConfigProblem[]): void {
  for (const list of ['allow', 'deny'] as const) {
    rules[list].forEach((entry, i) => {
      if (parseCidr(entry) === null) problems.push({ path: `${path}.${list}[${i}]`, message: `"${entry}" is not an IP address or CIDR` });
    });
  }
}

function checkCors(cors: CorsConfig, path: string, problems: ConfigProblem[]): void {
  if (cors.enabled && cors.origins.length === 0) {
    problems.push({ path: `${path}.origins`, message: 'list at least one origin (or "*" for any)' });
  }
  cors.origins.forEach((o, i) => {
    if (o === '*') return;
    const m = ORIGIN_PATTERN.exec(o);
    if (m === null || (m[4] !== undefined && m[4] !== '*' && Number(m[4]) > 65535)) {
      problems.push({
        path: `${path}.origins[${i}]`,
        message: `"${o}" is not an origin (scheme://host[:port], no path) or a pattern such as https://*.example.com or http://localhost:*`,
      });
    }
  });
  if (cors.credentials && cors.origins.includes('*')) {
    problems.push({ path: `${path}.credentials`, message: 'credentials cannot be allowed for any origin ("*"): list the origins' });
  }
  cors.allowHeaders?.forEach((h, i) => checkHeaderName(h, `${path}.allowHeaders[${i}]`, problems));
  cors.exposeHeaders.forEach((h, i) => checkHeaderName(h, `${path}.exposeHeaders[${i}]`, problems));
}

function checkDeprecation(d: DeprecationConfig, path: string, problems: ConfigProblem[]): void {
  const date = (value: string, at: string): number => {
    const t = ISO_DATE_TIME.test(value) ? Date.parse(value) : NaN;
    if (Number.isNaN(t)) problems.push({ path: at, message: `"${value}" is not an ISO 8601 date-time with a zone, such as 2025-06-30T23:59:59Z` });
    return t;
  };
  const deprecated = date(d.date, `${path}.date`);
  if (d.sunset !== undefined) {
    const sunset = date(d.sunset, `${path}.sunset`);
    if (sunset < deprecated) problems.push({ path: `${path}.sunset`, message: 'must not be earlier than the deprecation date (RFC 9745)' });
  }
  if (d.link !== undefined) {
    let ok = false;
    try {
      const u = new URL(d.link);
      ok = (u.protocol === 'https:' || u.protocol === 'http:') && !/[<>\s]/.test(d.link);
    } catch {
      ok = false;
    }
    if (!ok) problems.push({ path: `${path}.link`, message: `"${d.link}" is not an http(s) URL` });
  }
}

function checkGlobal(p: PoliciesConfig, problems: ConfigProblem[]): void {
  checkIpRules(p.ipRules, 'policies.ipRules', problems);
  if (p.cors) checkCors(p.cors, 'policies.cors', problems);
  const { headersTimeoutMs, requestTimeoutMs } = p.limits;
  if (requestTimeoutMs > 0 && headersTimeoutMs > requestTimeoutMs) {
    problems.push({ path: 'policies.limits.headersTimeoutMs', message: `must not exceed requestTimeoutMs (${requestTimeoutMs})` });
  }
}

function checkRoute(p: RoutePoliciesConfig, path: string, problems: ConfigProblem[]): void {
  if (p.ipRules) checkIpRules(p.ipRules, `${path}.ipRules`, problems);
  if (p.cors) checkCors(p.cors, `${path}.cors`, problems);
  checkRules(p.headers.request, `${path}.headers.request`, REQUEST_RESERVED, problems);
  checkRules(p.headers.response, `${path}.headers.response`, RESPONSE_RESERVED, problems);
  if (p.deprecation) checkDeprecation(p.deprecation, `${path}.deprecation`, problems);
}

/** Cross-field checks of the policies sections (called from the config loader's crossCheck). */
export function checkPolicies(cfg: GatewayConfig, problems: ConfigProblem[]): void {
  checkGlobal(cfg.policies, problems);
  cfg.routes.forEach((r, i) => checkRoute(r.policies, `routes[${i}].policies`, problems));
}

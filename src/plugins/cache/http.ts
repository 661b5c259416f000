/** RFC 9111 directive reading for the response cache. */

export interface Directives {
  noStore: boolean;
  noCache: boolean;
  private: boolean;
  public: boolean;
  mustRevalidate: boolean;
  /** Seconds, or -1 when absent. */
  maxAge: number;
  sMaxAge: number;
}

function seconds(v: string): number {
  const s = v.startsWith('"') && v.endsWith('"') ? v.slice(1, -1) : v;
  return /^[0-9]+$/.test(s) ? Math.min(Number(s), 2 ** 31) : -1;
}

export function parseCacheControl(value: string | undefined): Directives {
  const d: Directives = { noStore: false, noCache: false, private: false, public: false, mustRevalidate: false, maxAge: -1, sMaxAge: -1 };
  if (value === undefined || value === '') return d;
  for (const part of value.split(',')) {
    const eq = part.indexOf('=');
    const name = (eq < 0 ? part : part.slice(0, eq)).trim().toLowerCase();
    const arg = eq < 0 ? '' : part.slice(eq + 1).trim();
    switch (name) {
      case 'no-store':
        d.noStore = true;
        break;
      // Qualified no-cache / private (with field names) are treated as the unqualified form: stricter, never wrong.
      case 'no-cache':
        d.noCache = true;
        break;
      case 'private':
        d.private = true;
        break;
      case 'public':
        d.public = true;
        break;
      case 'must-revalidate':
      case 'proxy-revalidate':
        d.mustRevalidate = true;
        break;
      case 'max-age':
        d.maxAge = seconds(arg);
        // An invalid max-age makes the response stale (RFC 9111 §4.2.1).
        if (d.maxAge < 0) d.maxAge = 0;
        break;
      case 's-maxage':
        d.sMaxAge = seconds(arg);
        if (d.sMaxAge < 0) d.sMaxAge = 0;
        break;
    }
  }
  return d;
}

/**
 * Freshness lifetime in seconds from the response (s-maxage, then max-age, then Expires − Date),
 * or -1 when the response gives none.
 */
export function explicitLifetime(d: Directives, expires: string | undefined, date: string | undefined, nowMs: number): number {
  if (d.sMaxAge >= 0) return d.sMaxAge;
  if (d.maxAge >= 0) return d.maxAge;
  if (expires !== undefined) {
    const e = Date.parse(expires);
    // An invalid Expires (such as "0") means already expired.
    if (Number.isNaN(e)) return 0;
    const base = date !== undefined && !Number.isNaN(Date.parse(date)) ? Date.parse(date) : nowMs;
    return Math.max(0, Math.floor((e - base) / 1000));
  }
  return -1;
}

/** Reads a header from a flat name/value list (names in any case). Returns the values joined with ", ". */
export function headerOf(headers: readonly string[], name: string): string | undefined {
  let out: string | undefined;
  for (let i = 0; i < headers.length; i += 2) {
    if (headers[i].length === name.length && headers[i].toLowerCase() === name) out = out === undefined ? headers[i + 1] : `${out}, ${headers[i + 1]}`;
  }
  return out;
}

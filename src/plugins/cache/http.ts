/** RFC 9111 directive reading for the response cache. */

export interface Directives {
  noStore: boolean;
  noCache: boolean;
  private: boolean;
  public: boolean;
  /** must-revalidate or proxy-revalidate: never served stale (a shared cache reads both alike). */
  mustRevalidate: boolean;
  /** Seconds, or -1 when absent. */
  maxAge: number;
  sMaxAge: number;
  /** RFC 5861 windows (seconds), or -1 when absent. */
  staleWhileRevalidate: number;
  staleIfError: number;
}

function seconds(v: string): number {
  const s = v.startsWith('"') && v.endsWith('"') ? v.slice(1, -1) : v;
  return /^[0-9]+$/.test(s) ? Math.min(Number(s), 2 ** 31) : -1;
}

export function parseCacheControl(value: string | undefined): Directives {
  const d: Directives = {
    noStore: false,
    noCache: false,
    private: false,
    public: false,
    mustRevalidate: false,
    maxAge: -1,
    sMaxAge: -1,
    staleWhileRevalidate: -1,
    staleIfError: -1,
  };
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
      // An invalid window grants nothing (RFC 5861 asks for delta-seconds).
      case 'stale-while-revalidate':
        d.staleWhileRevalidate = Math.max(0, seconds(arg));
        break;
      case 'stale-if-error':
        d.staleIfError = Math.max(0, seconds(arg));
        break;
    }
  }
  return d;
}

/** A Structured Fields token (RFC 8941 §3.3.4), a dictionary key (§3.2) and one bare item or inner list. */
const SF_KEY = /^[a-z*][a-z0-9_\-.*]*$/;
const SF_BARE = /^(?:-?[0-9]{1,15}(?:\.[0-9]{1,3})?|"(?:[^"\\\x00-\x1f\x7f]|\\["\\])*"|[A-Za-z*][!#$%&'*+\-.^_`|~0-9A-Za-z:/]*|:[A-Za-z0-9+/=]*:|\?[01])$/;

function sfItemValid(item: string): boolean {
  const parts = item.split(';');
  const head = parts[0].trim();
  const eq = head.indexOf('=');
  const key = eq < 0 ? head : head.slice(0, eq);
  if (!SF_KEY.test(key)) return false;
  if (eq >= 0) {
    const v = head.slice(eq + 1);
    if (!(v.startsWith('(') && v.endsWith(')') ? v.slice(1, -1).trim().split(/ +/).every((x) => x === '' || SF_BARE.test(x)) : SF_BARE.test(v))) return false;
  }
  for (let i = 1; i < parts.length; i++) {
    const p = parts[i].trim();
    const pe = p.indexOf('=');
    if (!SF_KEY.test(pe < 0 ? p : p.slice(0, pe)) || (pe >= 0 && !SF_BARE.test(p.slice(pe + 1)))) return false;
  }
  return true;
}

/**
 * A targeted cache-control field (RFC 9213) parsed as a Structured Fields Dictionary, or null when
 * it does not parse (the field is then ignored, as if absent). Quoted strings holding commas are
 * not split apart here: no cache directive takes one, and such a field is refused, never misread.
 */
export function parseTargeted(value: string): Directives | null {
  const members = value.split(',');
  for (const m of members) if (!sfItemValid(m.trim())) return null;
  return parseCacheControl(value);
}

const MONTHS = ['Jan', 'Feb', 'Mar', 'Apr', 'May', 'Jun', 'Jul', 'Aug', 'Sep', 'Oct', 'Nov', 'Dec'];

const IMF_FIXDATE = /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun), (\d\d) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) (\d{4}) (\d\d):(\d\d):(\d\d) GMT$/;
const RFC850 = /^(Monday|Tuesday|Wednesday|Thursday|Friday|Saturday|Sunday), (\d\d)-(Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec)-(\d\d) (\d\d):(\d\d):(\d\d) GMT$/;
const ASCTIME = /^(Mon|Tue|Wed|Thu|Fri|Sat|Sun) (Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec) ([ \d]\d) (\d\d):(\d\d):(\d\d) (\d{4})$/;

function utc(year: number, month: number, day: number, h: number, m: number, s: number): number {
  // Leap seconds (60) are allowed by the grammar and read as the next second.
  if (h > 23 || m > 59 || s > 60 || day < 1) return NaN;
  const ms = Date.UTC(year, month, day, h, m, s);
  // A day past the month's end (31 Feb) would roll over. The day name is not checked against the
  // date: RFC 9110 makes the form strict, not the calendar.
  if (new Date(Date.UTC(year, month, day)).getUTCDate() !== day) return NaN;
  return ms;
}

/**
 * An HTTP-date (RFC 9110 §5.6.7) in ms since the epoch, or NaN: IMF-fixdate, the obsolete RFC 850
 * form and asctime only, never the many forms V8's Date.parse also accepts (a comma missing, "UTC",
 * a time zone offset), which made a malformed Expires fresh for decades.
 */
export function parseHttpDate(value: string | undefined, nowMs = Date.now()): number {
  if (value === undefined) return NaN;
  let m = IMF_FIXDATE.exec(value);
  if (m !== null) return utc(Number(m[4]), MONTHS.indexOf(m[3]), Number(m[2]), Number(m[5]), Number(m[6]), Number(m[7]));
  m = RFC850.exec(value);
  if (m !== null) {
    // A two-digit year more than 50 years in the future is the most recent past year with those digits.
    const thisYear = new Date(nowMs).getUTCFullYear();
    let year = thisYear - (thisYear % 100) + Number(m[4]);
    if (year > thisYear + 50) year -= 100;
    return utc(year, MONTHS.indexOf(m[3]), Number(m[2]), Number(m[5]), Number(m[6]), Number(m[7]));
  }
  m = ASCTIME.exec(value);
  if (m !== null) return utc(Number(m[7]), MONTHS.indexOf(m[2]), Number(m[3].trim()), Number(m[4]), Number(m[5]), Number(m[6]));
  return NaN;
}

/** The Age of a response in seconds (RFC 9111 §5.1): delta-seconds; of a list, the first value; anything else is ignored (0). */
export function parseAge(value: string | undefined): number {
  if (value === undefined) return 0;
  const comma = value.indexOf(',');
  const first = (comma < 0 ? value : value.slice(0, comma)).trim();
  return /^[0-9]+$/.test(first) ? Math.min(Number(first), 2 ** 31) : 0;
}

/**
 * Freshness lifetime in seconds from the response (s-maxage, then max-age, then Expires − Date),
 * or -1 when the response gives none.
 */
export function explicitLifetime(d: Directives, expires: string | undefined, date: string | undefined, nowMs: number): number {
  if (d.sMaxAge >= 0) return d.sMaxAge;
  if (d.maxAge >= 0) return d.maxAge;
  if (expires !== undefined) {
    const e = parseHttpDate(expires, nowMs);
    // An invalid Expires (such as "0", or a date in any other form) means already expired (RFC 9111 §5.3).
    if (Number.isNaN(e)) return 0;
    const d = parseHttpDate(date, nowMs);
    const base = Number.isNaN(d) ? nowMs : d;
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

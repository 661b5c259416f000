/**
 * Path normalisation (RFC 3986 §6.2.2 plus the usual gateway hardening). The normalised path is
 * what routes match and what is forwarded, so no request reaches an upstream path outside its route.
 *
 * - percent-encoded unreserved characters are decoded (%2e → .), other escapes are upper-cased;
 * - encoded slashes and backslashes (%2F, %5C, \) become segment separators, as the upstream might treat them;
 * - empty segments (//) and dot segments are resolved; ".." never climbs above the root;
 * - NUL and malformed escapes make the path invalid (null);
 * - so do dot segments with parameters (..;x, .;x, %2e%2e;, ..%3Bx): Tomcat, Jetty and Spring strip
 *   the parameters and then resolve the `..`, which would climb out of the route's prefix upstream.
 */

const NEEDS_WORK = /%|\\|\/\/|\/\.(?:\/|\.|;|$)/;

/** A decoded segment is `.` or `..` followed by parameters (`;`, or `%3B` which some servers decode first). */
function isDotWithParameters(seg: string): boolean {
  if (seg.charCodeAt(0) !== 46 /* . */) return false;
  const start = seg.charCodeAt(1) === 46 ? 2 : 1;
  return seg.charCodeAt(start) === 59 /* ; */ || seg.startsWith('%3B', start);
}

/**
 * The normalised path has `;` parameters (or an escaped `;`, which servers that decode before they
 * split parameters read as one). Checked after routing, for routes that do not accept them.
 */
export function hasPathParameters(path: string): boolean {
  return path.indexOf(';') >= 0 || path.indexOf('%3B') >= 0;
}

const UNRESERVED = new Uint8Array(128);
for (const c of 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~') UNRESERVED[c.charCodeAt(0)] = 1;

function hexVal(code: number): number {
  if (code >= 48 && code <= 57) return code - 48;
  if (code >= 65 && code <= 70) return code - 55;
  if (code >= 97 && code <= 102) return code - 87;
  return -1;
}

export function normalizePath(path: string): string | null {
  if (path.charCodeAt(0) !== 47 /* / */) return null;
  if (!NEEDS_WORK.test(path)) return path;

  let decoded = '';
  for (let i = 0; i < path.length; i++) {
    const ch = path.charCodeAt(i);
    if (ch === 37 /* % */) {
      const hi = hexVal(path.charCodeAt(i + 1));
      const lo = hexVal(path.charCodeAt(i + 2));
      if (hi < 0 || lo < 0) return null;
      const byte = hi * 16 + lo;
      i += 2;
      if (byte === 0) return null;
      if (byte === 0x2f || byte === 0x5c) decoded += '/';
      else if (byte < 128 && UNRESERVED[byte]) decoded += String.fromCharCode(byte);
      else decoded += '%' + (byte < 16 ? '0' : '') + byte.toString(16).toUpperCase();
    } else if (ch === 92 /* \ */) {
      decoded += '/';
    } else {
      decoded += path[i];
    }
  }

  const out: string[] = [];
  const parts = decoded.split('/');
  for (const seg of parts) {
    if (seg === '' || seg === '.') continue;
    if (isDotWithParameters(seg)) return null;
    if (seg === '..') out.pop();
    else out.push(seg);
  }
  const last = parts[parts.length - 1];
  const trailing = out.length > 0 && (last === '' || last === '.' || last === '..');
  return '/' + out.join('/') + (trailing ? '/' : '');
}

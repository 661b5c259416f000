/** Reading credentials from a request, and taking them out of what is forwarded upstream. */

const BEARER = /^bearer(?: |$)/i;

/**
 * The token of an `Authorization: Bearer <token>` header; undefined when the header is absent or
 * uses another scheme, '' when the scheme is Bearer but the token is missing. (Node has already
 * trimmed the value.)
 */
export function bearerToken(header: string | undefined): string | undefined {
  if (header === undefined || !BEARER.test(header)) return undefined;
  let i = 6;
  while (header.charCodeAt(i) === 32) i++;
  return header.slice(i).trim();
}

/** The value of cookie `name` in a Cookie header, or undefined. */
export function cookieValue(header: string | undefined, name: string): string | undefined {
  if (header === undefined) return undefined;
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    if (eq > 0 && part.slice(0, eq).trim() === name) return part.slice(eq + 1).trim();
  }
  return undefined;
}

/** The Cookie header without the cookies in `names`; '' when nothing is left. */
export function withoutCookies(header: string, names: ReadonlySet<string>): string {
  const kept: string[] = [];
  for (const part of header.split(';')) {
    const eq = part.indexOf('=');
    const name = (eq < 0 ? part : part.slice(0, eq)).trim();
    if (name !== '' && !names.has(name)) kept.push(part.trim());
  }
  return kept.join('; ');
}

function decode(s: string): string | undefined {
  try {
    return decodeURIComponent(s.replace(/\+/g, ' '));
  } catch {
    return undefined;
  }
}

/** The value of query parameter `name` in a raw query string ('?a=1&b=2' or ''), or undefined. */
export function queryValue(query: string, name: string): string | undefined {
  if (query.length < 2) return undefined;
  for (const part of query.slice(1).split('&')) {
    const eq = part.indexOf('=');
    const key = decode(eq < 0 ? part : part.slice(0, eq));
    if (key === name) return eq < 0 ? '' : decode(part.slice(eq + 1)) ?? '';
  }
  return undefined;
}

/** The raw query string without the parameters in `names`, other parameters byte for byte. */
export function withoutQueryParams(query: string, names: ReadonlySet<string>): string {
  if (query.length < 2) return query;
  const kept: string[] = [];
  for (const part of query.slice(1).split('&')) {
    const eq = part.indexOf('=');
    const key = decode(eq < 0 ? part : part.slice(0, eq));
    if (key === undefined || !names.has(key)) kept.push(part);
  }
  return kept.length ? `?${kept.join('&')}` : '';
}

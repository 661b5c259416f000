/**
 * Identity headers sent upstream. Upstreams trust them, so a client-sent copy must never get
 * through: every spelling a backend might fold onto the same name is dropped. Letter case is
 * handled by the relay (it compares lower-cased names); "_" versus "-" is expanded here, at
 * start-up, because CGI-style servers (PHP, WSGI, nginx with underscores_in_headers) read
 * X_User_Id and X-User-Id as one header. Names with whitespace never get this far: Node's parser
 * refuses them with 400.
 */

/** Every "-"/"_" spelling of a header name, lower-cased. */
export function headerVariants(name: string): string[] {
  const lower = name.toLowerCase();
  let out = [''];
  for (const ch of lower) {
    if (ch === '-' || ch === '_') out = out.flatMap((p) => [p + '-', p + '_']);
    else out = out.map((p) => p + ch);
  }
  return out;
}

/** Printable ASCII only: no CR/LF or other control bytes can reach the upstream request. */
const PRINTABLE = /^[\x20-\x7e]+$/;
/** A role or scope inside a comma-separated header value. */
const LIST_ITEM = /^[\x21-\x2b\x2d-\x7e]+$/;

export function isHeaderValue(value: string, maxLength: number): boolean {
  return value.length <= maxLength && PRINTABLE.test(value) && value.trim() === value;
}

export interface IdentityHeaderNames {
  consumerId: string;
  userId: string;
  roles: string;
  maxLength: number;
}

/** Thrown when a verified credential names an identity that cannot be sent upstream safely. */
export class UnsendableIdentityError extends Error {}

/**
 * Builds the upstream header pairs of one identity (once per credential, then cached with it).
 * Throws UnsendableIdentityError when the consumer id, user id or roles are not a safe header value.
 */
export function identityHeaderPairs(
  names: IdentityHeaderNames,
  consumerId: string,
  userId: string | undefined,
  roles: readonly string[],
  extra: readonly [string, string][],
): [string, string][] {
  const max = names.maxLength;
  if (!isHeaderValue(consumerId, max)) throw new UnsendableIdentityError('the consumer id is not a valid header value');
  const pairs: [string, string][] = [[names.consumerId, consumerId]];
  if (userId !== undefined) {
    if (!isHeaderValue(userId, max)) throw new UnsendableIdentityError('the user id is not a valid header value');
    pairs.push([names.userId, userId]);
  }
  if (roles.length) {
    for (const r of roles) if (!LIST_ITEM.test(r)) throw new UnsendableIdentityError('a role is not a valid header list item');
    const joined = roles.join(',');
    if (joined.length > max) throw new UnsendableIdentityError('the roles do not fit the identity header length limit');
    pairs.push([names.roles, joined]);
  }
  for (const p of extra) pairs.push(p);
  return pairs;
}

import type { Identity } from '../../context';
import type { ConsumerDirectory, Verified } from './consumers';
import { AuthFailure } from './failure';
import { identityHeaderPairs, isHeaderValue, UnsendableIdentityError, type IdentityHeaderNames } from './identity-headers';

/**
 * Reading an identity out of a verified credential's claims: a JWT's payload, an introspection
 * answer, an OIDC ID token. The three name their fields the same way (`claims` and `claimHeaders`
 * in their config), so they share this; only the words of a refusal differ.
 */

/** Where the identity is, in claim names (the `claims` section of jwt, introspection and oidc). */
export interface ClaimNames {
  consumer: string;
  user: string;
  roles: string;
  scopes: string;
}

/** How one kind of credential reads its claims. Made at start-up. */
export class ClaimsReader {
  private readonly claimHeaders: [string, string][];

  constructor(
    readonly names: ClaimNames,
    claimHeaders: Readonly<Record<string, string>>,
    private readonly headerNames: IdentityHeaderNames,
    /** The credential as a refusal names it: "the token", "the ID token". */
    private readonly credential: string,
    /** One of its fields as a refusal names it: "the token claim", "the introspection member". */
    private readonly field: string,
  ) {
    this.claimHeaders = Object.entries(claimHeaders);
  }

  /** A claim that lists names: an array of strings, or one space-separated string. */
  nameList(value: unknown, claim: string): readonly string[] {
    if (value === undefined) return [];
    if (typeof value === 'string') return value.split(' ').filter((s) => s !== '');
    if (Array.isArray(value) && value.every((v) => typeof v === 'string')) return value as string[];
    throw new AuthFailure(`${this.field} "${claim}" must be a string or an array of strings`);
  }

  /** The user id, roles, scopes and mapped headers the claims give (the consumer id is read by the caller). */
  read(doc: Record<string, unknown>): { user: string | undefined; roles: readonly string[]; scopes: readonly string[]; extra: [string, string][] } {
    const { names } = this;
    const user = doc[names.user];
    if (user !== undefined && typeof user !== 'string') throw new AuthFailure(`${this.field} "${names.user}" must be a string`);
    const roles = this.nameList(doc[names.roles], names.roles);
    const scopes = this.nameList(doc[names.scopes], names.scopes);
    const extra: [string, string][] = [];
    for (const [header, claim] of this.claimHeaders) {
      const v = claimHeaderValue(doc[claim], this.headerNames.maxLength);
      if (v !== undefined) extra.push([header, v]);
    }
    return { user, roles, scopes, extra };
  }

  /** The identity headers of these values; AuthFailure when one cannot be sent upstream safely. */
  headers(consumerId: string, user: string | undefined, roles: readonly string[], extra: readonly [string, string][]): [string, string][] {
    try {
      return identityHeaderPairs(this.headerNames, consumerId, user, roles, extra);
    } catch (err) {
      if (err instanceof UnsendableIdentityError) throw new AuthFailure(`${this.credential} identity cannot be forwarded: ${err.message}`);
      throw err;
    }
  }

  /**
   * The verified identity of `consumerId` with the claims of `doc`: the roles and scopes of a
   * configured consumer of that id are added to the token's.
   */
  verified(doc: Record<string, unknown>, consumerId: string, method: Identity['method'], consumers: ConsumerDirectory): Verified {
    const { user, roles: claimed, scopes: granted, extra } = this.read(doc);
    const known = consumers.get(consumerId);
    const roles = known ? union(claimed, known.config.roles) : claimed;
    const scopes = known ? union(granted, known.config.scopes) : granted;
    return {
      identity: { consumerId, roles, scopes, method, headers: this.headers(consumerId, user, roles, extra) },
      routes: known ? known.routes : null,
    };
  }
}

export function union(a: readonly string[], b: readonly string[]): readonly string[] {
  if (b.length === 0) return a;
  if (a.length === 0) return b;
  return [...new Set([...a, ...b])];
}

/** Header value of a mapped claim, or undefined when the claim has no printable form. */
export function claimHeaderValue(value: unknown, max: number): string | undefined {
  let s: string;
  if (typeof value === 'string') s = value;
  else if (typeof value === 'number' || typeof value === 'boolean') s = String(value);
  else if (Array.isArray(value) && value.every((v) => typeof v === 'string')) s = value.join(',');
  else return undefined;
  return isHeaderValue(s, max) ? s : undefined;
}

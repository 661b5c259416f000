import { createHash, timingSafeEqual } from 'node:crypto';

export interface AdminToken {
  id: string;
  token: string;
}

const digest = (s: string): Buffer => createHash('sha256').update(s).digest();

/**
 * Checks admin bearer tokens in constant time: every candidate is hashed to the same length and
 * compared with timingSafeEqual, and every configured token is compared on every call, so neither
 * the length nor the position of a match leaks through timing.
 */
export class AdminGuard {
  private readonly tokens: { id: string; hash: Buffer }[];

  constructor(tokens: readonly AdminToken[]) {
    this.tokens = tokens.map((t) => ({ id: t.id, hash: digest(t.token) }));
  }

  get enabled(): boolean {
    return this.tokens.length > 0;
  }

  /** The id of the token presented in an Authorization header, or null. */
  identify(authorization: string | undefined): string | null {
    if (!authorization || !/^Bearer\s/i.test(authorization)) return null;
    const presented = digest(authorization.slice(7).trim());
    let match: string | null = null;
    for (const t of this.tokens) if (timingSafeEqual(presented, t.hash) && match === null) match = t.id;
    return match;
  }
}

import type { ErrorCode } from '../../errors';

/**
 * Why a credential was not accepted. The step turns it into 401 (with WWW-Authenticate) or, when
 * the key source itself is unreachable, 503. Messages are fixed strings: nothing from the
 * credential is ever echoed back or logged.
 */
export class AuthFailure extends Error {
  constructor(
    message: string,
    /** The key source (JWKS, key store) is unreachable, so nothing can be verified: 503, not 401. */
    readonly unavailable = false,
    /** The unavailable source is a remote auth service (introspection), not a key source. */
    readonly remote = false,
    /** A more precise code than UNAUTHENTICATED for the answer. */
    readonly code?: ErrorCode,
  ) {
    super(message);
    this.name = 'AuthFailure';
  }
}

import { GatewayError, type ErrorCode } from '../errors';

/**
 * Maps an undici or socket error to the gateway's answer. Upstream trouble is never a 500:
 * refused, reset and malformed answers are 502, anything that ran out of time is 504.
 */
export function upstreamErrorCode(err: unknown): ErrorCode {
  // A step's own failure surfacing through the relay (a request body over its limit).
  if (err instanceof GatewayError) return err.code;
  const e = err as { code?: string; name?: string; cause?: { code?: string } } | null;
  // A TLS alert from the upstream that ended the connection (see watchSocket in retry.ts).
  if (e?.code === 'UND_ERR_SOCKET' && isTlsFailure(e.cause?.code)) return 'UPSTREAM_TLS';
  switch (e?.code) {
    case 'UND_ERR_CONNECT_TIMEOUT':
      return 'UPSTREAM_CONNECT_TIMEOUT';
    case 'UND_ERR_HEADERS_TIMEOUT':
    case 'UND_ERR_BODY_TIMEOUT':
    case 'GW_REQUEST_TIMEOUT':
    case 'ETIMEDOUT':
      return 'UPSTREAM_TIMEOUT';
    case 'ECONNREFUSED':
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
    case 'EHOSTUNREACH':
    case 'ENETUNREACH':
    case 'EADDRNOTAVAIL':
      return 'UPSTREAM_CONNECT_FAILED';
    case 'ECONNRESET':
    case 'EPIPE':
    case 'UND_ERR_SOCKET':
    case 'UND_ERR_CLOSED':
      return 'UPSTREAM_RESET';
    case 'GW_QUEUE_TIMEOUT':
      return 'UPSTREAM_QUEUE_FULL';
    case 'UND_ERR_RES_CONTENT_LENGTH_MISMATCH':
    case 'UND_ERR_RES_EXCEEDED_MAX_SIZE':
    case 'UND_ERR_INFO':
      return 'UPSTREAM_BAD_RESPONSE';
  }
  if (isTlsFailure(e?.code)) return 'UPSTREAM_TLS';
  // Parser errors (HPE_*) and anything unforeseen: the upstream's answer was unusable.
  return 'UPSTREAM_BAD_RESPONSE';
}

/**
 * OpenSSL's verification results (CERT_HAS_EXPIRED, UNABLE_TO_VERIFY_LEAF_SIGNATURE, ...), Node's
 * name check (ERR_TLS_CERT_ALTNAME_INVALID) and the upstream's alerts about our certificate
 * (ERR_SSL_TLSV13_ALERT_CERTIFICATE_REQUIRED, ERR_SSL_SSLV3_ALERT_BAD_CERTIFICATE, ...).
 */
const VERIFY_ERRORS = new Set([
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_REVOKED',
  'CERT_UNTRUSTED',
  'CERT_REJECTED',
  'CERT_SIGNATURE_FAILURE',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'HOSTNAME_MISMATCH',
]);

function isTlsFailure(code: string | undefined): boolean {
  return code !== undefined && (VERIFY_ERRORS.has(code) || code.startsWith('ERR_TLS_') || code.startsWith('ERR_SSL_'));
}

/** The error the relay raises when a request outlives its route's overall deadline. */
export class RequestTimeoutError extends Error {
  readonly code = 'GW_REQUEST_TIMEOUT';
  constructor(ms: number) {
    super(`request exceeded its ${ms} ms deadline`);
  }
}

/** The relay's headers and body timeouts (timeouts.headersMs, bodyMs), with undici's codes for them. */
export class PhaseTimeoutError extends Error {
  constructor(
    readonly code: 'UND_ERR_HEADERS_TIMEOUT' | 'UND_ERR_BODY_TIMEOUT',
    message: string,
  ) {
    super(message);
  }
}

/** The error the relay raises when a request waited queueTimeoutMs for a connection of a saturated target. */
export class QueueTimeoutError extends Error {
  readonly code = 'GW_QUEUE_TIMEOUT';
  constructor(ms: number) {
    super(`no upstream connection became free within ${ms} ms`);
  }
}

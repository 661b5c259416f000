import type { FailureKind } from '../config/schema';
import type { ErrorCode } from '../errors';

/**
 * Upstream failure kinds as bits, so that "does this outcome count?" is one AND against a mask
 * compiled from the config (breaker.failureOn, retries.on).
 */
export const CONNECT = 1;
const TIMEOUT = 2;
const RESET = 4;
const BAD_RESPONSE = 8;
const GATEWAY_ERROR = 16;
const STATUS_5XX = 32;

const BIT: Record<FailureKind, number> = {
  connect: CONNECT,
  timeout: TIMEOUT,
  reset: RESET,
  'bad-response': BAD_RESPONSE,
  'gateway-error': GATEWAY_ERROR,
  '5xx': STATUS_5XX,
};

export function kindMask(kinds: readonly FailureKind[]): number {
  let mask = 0;
  for (const k of kinds) mask |= BIT[k];
  return mask;
}

/** The bits of an answer's status: 0 for anything below 500. */
export function statusKind(status: number): number {
  if (status < 500) return 0;
  return status >= 502 && status <= 504 ? GATEWAY_ERROR | STATUS_5XX : STATUS_5XX;
}

/** The kind of a failed exchange, from the code the relay answers with. */
export function errorKind(code: ErrorCode): number {
  switch (code) {
    case 'UPSTREAM_CONNECT_FAILED':
    case 'UPSTREAM_CONNECT_TIMEOUT':
    case 'UPSTREAM_TLS':
      return CONNECT;
    case 'UPSTREAM_TIMEOUT':
      return TIMEOUT;
    case 'UPSTREAM_RESET':
      return RESET;
    case 'UPSTREAM_BAD_RESPONSE':
      return BAD_RESPONSE;
    default:
      return 0;
  }
}

/** A label for metrics and logs: the most specific kind set in `bits`. */
export function kindName(bits: number): string {
  if (bits & CONNECT) return 'connect';
  if (bits & TIMEOUT) return 'timeout';
  if (bits & RESET) return 'reset';
  if (bits & BAD_RESPONSE) return 'bad-response';
  if (bits & GATEWAY_ERROR) return 'gateway-error';
  if (bits & STATUS_5XX) return '5xx';
  return 'none';
}

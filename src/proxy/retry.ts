import type { Socket } from 'node:net';
import type { UpstreamConfig } from '../config/schema';
import { kindMask } from './failures';
import { RollingCounts } from './window';

/**
 * The retry rules of one upstream, and its retry budget: over a sliding window, retries stay at or
 * below `budgetRatio` of the requests (plus a small floor), so that retries can never multiply
 * the load on an upstream that is already failing.
 */
export class RetryPolicy {
  readonly maxRetries: number;
  /** Failure kinds that are retried (bits of failures.ts). */
  readonly onMask: number;
  readonly staleConnection: boolean;
  private readonly methods: ReadonlySet<string>;
  private readonly ratio: number;
  private readonly floor: number;
  /** A: requests, B: retries. */
  private readonly window: RollingCounts;

  constructor(cfg: UpstreamConfig['retries']) {
    this.maxRetries = cfg.maxRetries;
    this.onMask = kindMask(cfg.on);
    this.staleConnection = cfg.staleConnection;
    this.methods = new Set(cfg.methods);
    this.ratio = cfg.budgetRatio;
    this.floor = cfg.budgetMinRetries;
    this.window = new RollingCounts(cfg.budgetWindowMs);
  }

  /** Counts one client request toward the budget (first attempts only). */
  countRequest(now: number): void {
    this.window.addA(now);
  }

  allowsMethod(method: string): boolean {
    return this.methods.has(method);
  }

  /** Whether one more retry fits in the budget now. */
  hasBudget(now: number): boolean {
    const w = this.window;
    w.advance(now);
    return w.totalB < this.floor || w.totalB + 1 <= this.ratio * w.totalA;
  }

  spendBudget(now: number): void {
    this.window.addB(now);
  }

  /** Requests and retries in the current budget window (for the admin view). */
  budgetUse(now: number): { requests: number; retries: number } {
    this.window.advance(now);
    return { requests: this.window.totalA, retries: this.window.totalB };
  }
}

const kBytesRead = Symbol('gateway.bytesRead');

const kTlsAlert = Symbol('gateway.tlsAlert');

type WatchedSocket = Socket & { [kTlsAlert]?: Error };

function noteSocketError(this: WatchedSocket, err: Error & { cause?: unknown }): void {
  (err as { [kBytesRead]?: number })[kBytesRead] = this.bytesRead;
  const alert = this[kTlsAlert];
  if (alert !== undefined) {
    // The error undici fails the request with: it names the alert that caused it.
    if (err !== alert && err.cause === undefined) err.cause = alert;
    return;
  }
  if ((err as { code?: string }).code?.startsWith('ERR_SSL_')) this[kTlsAlert] = err;
}

/**
 * Called once per new upstream socket: a socket error then records how many bytes the socket had
 * read before it failed. undici reports the error itself without that (its own "other side closed"
 * errors carry it already).
 *
 * Under TLS 1.3 the handshake completes on the client side before the upstream has checked our
 * certificate; a refusal (certificate required, unknown CA, bad certificate) then arrives as an
 * alert on a socket undici already writes to. The socket emits the alert as an error, then ends,
 * and undici fails the request with its own "other side closed", dropping the alert. The alert is
 * kept here and attached as that error's cause, so the request is reported as the TLS failure it is.
 */
export function watchSocket(socket: Socket): void {
  socket.on('error', noteSocketError);
}

/**
 * The idle-socket race: the upstream closed a keep-alive connection just as a request was written
 * on it. The signature is a connection-level failure before any byte of the response arrived, on a
 * socket that had already read earlier responses (so it was reused; on a fresh socket the same
 * failure says the upstream dropped this very request, which is not safe to replay).
 */
export function failedOnReusedConnection(err: Error | null): boolean {
  if (err === null) return false;
  const e = err as { code?: string; socket?: { bytesRead?: number }; [kBytesRead]?: number };
  if (e.code !== 'UND_ERR_SOCKET' && e.code !== 'ECONNRESET' && e.code !== 'EPIPE') return false;
  const read = e.socket?.bytesRead ?? e[kBytesRead] ?? 0;
  return read > 0;
}

import { connect, type ClientHttp2Session, type SecureClientSessionOptions } from 'node:http2';
import { errors } from 'undici';

/**
 * One HTTP/2 connection to a target, shared by every gRPC call to it (HTTP/2 multiplexes them).
 * A session that got GOAWAY, failed or closed is replaced by a new one on the next call; calls
 * already on the old session finish there. h2c for http:// targets, TLS with ALPN h2 for https://
 * (the upstream's tls settings: CA, client certificate, server name).
 *
 * node:http2 rather than undici: undici's HTTP/2 client does not hand response trailers to a
 * dispatch handler as they arrive in every version we can pin, and a gRPC relay lives on them.
 */
export class H2Channel {
  private session: ClientHttp2Session | null = null;

  constructor(
    private readonly origin: string,
    private readonly options: SecureClientSessionOptions,
    private readonly connectMs: number,
    private readonly idleMs: number,
  ) {}

  /** The session new calls go on: the current one, or a new connection. */
  get(): ClientHttp2Session {
    const current = this.session;
    if (current !== null && !current.closed && !current.destroyed) return current;
    const s = connect(this.origin, this.options);
    this.session = s;
    const forget = (): void => {
      if (this.session === s) this.session = null;
    };
    // Our own connect timer, as for the HTTP/1.1 pools: the streams waiting on it fail with it.
    const timer = setTimeout(() => s.destroy(new errors.ConnectTimeoutError(`connecting to ${this.origin} took longer than ${this.connectMs} ms`)), this.connectMs);
    s.once('connect', () => clearTimeout(timer));
    s.once('close', () => {
      clearTimeout(timer);
      forget();
    });
    s.on('goaway', forget);
    // The streams on it see the error themselves; the session is only forgotten.
    s.on('error', forget);
    if (this.idleMs > 0) s.setTimeout(this.idleMs, () => s.close());
    return s;
  }

  /** Lets the calls in flight finish, then closes the connection. */
  close(): Promise<void> {
    const s = this.session;
    this.session = null;
    if (s === null || s.closed || s.destroyed) return Promise.resolve();
    return new Promise((resolve) => s.close(() => resolve()));
  }
}

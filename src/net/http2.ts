import type { IncomingMessage } from 'node:http';
import type { Socket } from 'node:net';
import type { Http2Server, Http2SecureServer, Http2ServerRequest, ServerHttp2Session } from 'node:http2';
import { GatewayError } from '../errors';

/**
 * A request the HTTP/2 server parsed (node:http2's compatibility API), as opposed to an HTTP/1.1
 * request line that names version 2.0: only the former carries its stream. Called only once a
 * request failed the HTTP/1 version check, so the HTTP/1.1 path pays nothing.
 */
export function isHttp2Request(req: IncomingMessage): boolean {
  return req.httpVersionMajor === 2 && (req as unknown as Http2ServerRequest).stream !== undefined;
}

/**
 * Brings an HTTP/2 request to the shape the chain and the HTTP/1.1 relay read (RFC 9113 §8.3.1,
 * §8.2.3): the pseudo-headers leave the header list (:method and :path are already req.method and
 * req.url), :authority becomes Host unless a Host came too (which must then name the same
 * authority), and cookie crumbs are joined into one Cookie header, as an HTTP/1.1 upstream expects.
 * Connection-specific headers never get here: nghttp2 refuses a request that carries one.
 * Returns the refusal of a request that cannot be relayed, or null.
 */
export function adoptHttp2Request(req: IncomingMessage): GatewayError | null {
  const raw = req.rawHeaders;
  const out: string[] = [];
  let authority: string | undefined;
  let host: string | undefined;
  let cookies: string[] | null = null;
  for (let i = 0; i < raw.length; i += 2) {
    const name = raw[i];
    if (name.charCodeAt(0) === 58 /* : */) {
      if (name === ':authority') authority = raw[i + 1];
      continue;
    }
    if (name === 'cookie') {
      (cookies ??= []).push(raw[i + 1]);
      continue;
    }
    if (name === 'host') host = raw[i + 1];
    out.push(name, raw[i + 1]);
  }
  if (authority !== undefined && host !== undefined && authority.toLowerCase() !== host.toLowerCase()) {
    return new GatewayError('BAD_HOST', { detail: 'The Host header names another authority than :authority (RFC 9113 §8.3.1)' });
  }
  if (host === undefined && authority !== undefined) {
    out.push('host', authority);
    req.headers.host = authority;
  }
  if (cookies !== null) out.push('cookie', cookies.join('; '));
  raw.length = 0;
  for (const v of out) raw.push(v);
  return null;
}

/**
 * The request carries a body the HTTP/1.1 relay must forward though no Content-Length announces
 * it: HTTP/2 frames bodies itself, so a request body of unknown length is the usual case (gRPC).
 */
export function http2BodyUnannounced(req: IncomingMessage): boolean {
  const stream = (req as unknown as Http2ServerRequest).stream;
  return !stream.endAfterHeaders && req.headers['content-length'] === undefined;
}

/**
 * The connection under an HTTP/2 request. The compatibility API's req.socket is a proxy that loses
 * the connection once the stream closed, and the byte counts (metrics, access log) are read when
 * the response closed. Through the proxy, ref() is the socket's own, bound to it, and returns it;
 * the socket is ref'd already, so the call changes nothing.
 */
export function http2Socket(req: IncomingMessage): Socket {
  return req.socket.ref();
}

type AnyHttp2Server = Http2Server | Http2SecureServer;

/**
 * The HTTP/2 sessions of the gateway's HTTP/2 listeners: an idle session closes after the
 * keep-alive timeout (as an idle HTTP/1.1 connection does), and the drain sends every session
 * GOAWAY, which lets the streams in flight finish and refuses new ones. Node's server.close() would
 * otherwise wait for clients to close their sessions.
 */
export class Http2Sessions {
  private readonly sessions = new Set<ServerHttp2Session>();
  private draining = false;

  attach(server: AnyHttp2Server, idleMs: number): void {
    (server as AnyHttp2Server).on('session', (session: ServerHttp2Session) => {
      if (this.draining) {
        session.close();
        return;
      }
      this.sessions.add(session);
      session.once('close', () => this.sessions.delete(session));
      // Node's own session errors (a protocol violation by the client) end the session; they are the client's.
      session.on('error', () => undefined);
      if (idleMs > 0) session.setTimeout(idleMs, () => session.close());
    });
  }

  /** GOAWAY on every session: streams in flight finish, then the sessions close. */
  goAway(): void {
    this.draining = true;
    for (const s of this.sessions) s.close();
  }

  get open(): number {
    return this.sessions.size;
  }
}

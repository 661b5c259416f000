import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { Readable } from 'node:stream';
import type { FastifyBaseLogger } from 'fastify';
import type { CompiledRoute } from './routes';
import { http2Socket } from './net/http2';
import { verifiedClientCertificate, type ClientCertificate } from './net/tls';
import type { Target } from './proxy/upstreams';
import type { ResponseObserver } from './proxy/relay';
import type { RequestTrace } from './observability/tracing';

/** The verified caller, set by the auth step. */
export interface Identity {
  consumerId: string;
  roles: readonly string[];
  scopes: readonly string[];
  /** How the caller proved who it is. */
  method: 'jwt' | 'apiKey' | 'oidc' | 'introspection' | 'external' | 'clientCert';
  /** Extra upstream headers derived from the credential (JWT claim mappings). */
  headers?: readonly [string, string][];
}

/** The upstream exchange of a request, as the chain sees it (the relay's handler). */
export interface UpstreamExchange {
  /** The client went away or was answered otherwise: stop talking to the upstream. */
  abandon(): void;
}

/**
 * Everything one request carries through the chain. A class (not an object literal) so that
 * every request has the same hidden class and the hot path stays monomorphic.
 */
export class RequestContext {
  route!: CompiledRoute;
  /** Normalised path, without the query. */
  path = '';
  /** Raw query string including its leading '?', or ''. */
  query = '';
  clientIp = '';
  /** Address of the socket peer (the client, or the proxy in front of the gateway). */
  peer = '';
  /** The socket peer is a trusted proxy, so its X-Forwarded-* headers are believed. */
  peerTrusted = false;
  identity: Identity | null = null;
  target: Target | null = null;
  upstreamStartedAt = 0;
  /** Upstream time in ms, or -1 when the upstream was not called. */
  upstreamMs = -1;
  /** Code of the gateway error that answered this request, for the access log. */
  errorCode: string | null = null;
  /** For the access line: what the cache did (hit, miss, stale, revalidated, bypass) and the rate-limit decision. */
  cacheResult: string | null = null;
  rateLimitResult: string | null = null;
  /** The grpc-status of a gRPC call (the upstream's, or the gateway's own), for the access log. */
  grpcStatus: string | null = null;
  /** Wire bytes of this request and its response, known once the response closed (see RouteMetrics.record). */
  bytesIn = 0;
  bytesOut = 0;
  /** Stopped when the client goes away; set by the relay. */
  exchange: UpstreamExchange | null = null;
  /** Sees the upstream response as it streams (the cache fill). */
  observer: ResponseObserver | null = null;
  /** Stands in for `req` as the upstream request body (the body-size limit counts bytes through it). */
  body: Readable | null = null;
  /** An HTTP/2 request body no Content-Length announces: the relay forwards it all the same. */
  bodyUnannounced = false;
  /** Extra headers for the upstream request, as name/value pairs, added by chain steps. */
  upstreamHeaders: string[] | null = null;
  /** Extra headers for the client response, as name/value pairs, added by chain steps. */
  responseHeaders: string[] | null = null;
  /** The spans of a sampled request (set by the tracing step), else null: unsampled ones have only traceId. */
  trace: RequestTrace | null = null;
  /** The request's trace id while tracing is on (sampled or not), for the access line; else ''. */
  traceId = '';
  /**
   * The W3C trace context an unsampled request passes on to the upstream and to every call made for
   * it (tracestate: '' when there is none); '' when sampled (each call gets its own span's) or when
   * tracing is off.
   */
  traceparent = '';
  tracestate = '';

  /** The client connection, kept: `req.socket` is null once the connection closed (for HTTP/2, the session's connection, see net/http2.ts). */
  readonly socket: Socket;

  private requestLog: FastifyBaseLogger | null = null;

  constructor(
    readonly req: IncomingMessage,
    readonly res: ServerResponse,
    readonly id: string,
    /** The gateway's logger; `log` binds the request id to it on first use. */
    readonly baseLog: FastifyBaseLogger,
    readonly startedAt: number,
  ) {
    this.socket = req.httpVersionMajor === 2 ? http2Socket(req) : req.socket;
  }

  /**
   * The request's logger (lines carry its reqId). Made on first use: most requests log nothing but
   * their access line, and a pino child per request was a measurable share of the hot path.
   */
  get log(): FastifyBaseLogger {
    return (this.requestLog ??= this.baseLog.child({ reqId: this.id }));
  }

  /**
   * The client certificate the TLS handshake verified against listen.tls.clientCertificates.caFile,
   * or null (plain listener, no certificate, or one that did not verify in request mode). Read from
   * the socket on access: requests that do not ask pay nothing.
   */
  get clientCert(): ClientCertificate | null {
    return verifiedClientCertificate(this.req.socket);
  }

  addResponseHeader(name: string, value: string): void {
    (this.responseHeaders ??= []).push(name, value);
  }

  addUpstreamHeader(name: string, value: string): void {
    (this.upstreamHeaders ??= []).push(name, value);
  }
}

import type { IncomingMessage, ServerResponse } from 'node:http';
import { isGrpcRequest, sendGrpcError } from './grpc/status';

/**
 * Every error the gateway itself answers with, in one registry. The code is stable (clients and
 * dashboards key on it); the title is the human summary. Bodies follow RFC 9457 problem+json.
 */
export const ERRORS = {
  BAD_REQUEST: { status: 400, title: 'Bad request' },
  BAD_PATH: { status: 400, title: 'The request path is not valid' },
  BAD_REQUEST_LINE: { status: 400, title: 'The request line is not HTTP/1.0 or HTTP/1.1' },
  DUPLICATE_HEADER: { status: 400, title: 'A header that must appear once appears several times' },
  BAD_HOST: { status: 400, title: 'The Host header is not a valid host' },
  WEBSOCKET_NOT_ALLOWED: { status: 400, title: 'WebSocket upgrades are not allowed on this route' },
  OIDC_CALLBACK_INVALID: { status: 400, title: 'The login callback is not valid' },
  UNAUTHENTICATED: { status: 401, title: 'Authentication required' },
  UNKNOWN_TOKEN_ISSUER: { status: 401, title: 'The token issuer (iss) is not one this gateway accepts' },
  CLIENT_CERT_REQUIRED: { status: 401, title: 'A verified TLS client certificate is required' },
  CLIENT_CERT_INVALID: { status: 401, title: 'The TLS client certificate was not verified' },
  CLIENT_CERT_NO_IDENTITY: { status: 401, title: 'The TLS client certificate does not name the caller' },
  CLIENT_CERT_UNKNOWN_CONSUMER: { status: 403, title: 'The TLS client certificate names no known consumer' },
  FORBIDDEN: { status: 403, title: 'Forbidden' },
  OIDC_LOGIN_REFUSED: { status: 403, title: 'The identity provider refused the login' },
  ROUTE_NOT_FOUND: { status: 404, title: 'No route matches the request' },
  METHOD_NOT_ALLOWED: { status: 405, title: 'Method not allowed on this route' },
  REQUEST_TIMEOUT: { status: 408, title: 'The request was not received in time' },
  ADMIN_NOT_FOUND: { status: 404, title: 'No such resource' },
  KEY_STORE_READ_ONLY: { status: 409, title: 'The key store cannot be changed through the admin API' },
  PAYLOAD_TOO_LARGE: { status: 413, title: 'Request body too large' },
  HEADERS_TOO_LARGE: { status: 431, title: 'Request header fields too large' },
  RATE_LIMITED: { status: 429, title: 'Too many requests' },
  UPSTREAM_CONNECT_FAILED: { status: 502, title: 'The upstream refused or dropped the connection' },
  UPSTREAM_RESET: { status: 502, title: 'The upstream closed the connection before answering' },
  UPSTREAM_BAD_RESPONSE: { status: 502, title: 'The upstream sent an invalid response' },
  UPSTREAM_TLS: { status: 502, title: "The upstream's TLS certificate failed verification, or the upstream refused the gateway's" },
  IDP_BAD_RESPONSE: { status: 502, title: 'The identity provider sent an unusable response' },
  UPSTREAM_UNAVAILABLE: { status: 503, title: 'No healthy upstream target is available' },
  UPSTREAM_QUEUE_FULL: { status: 503, title: 'The upstream is saturated' },
  WEBSOCKET_LIMIT: { status: 503, title: "The route's WebSocket connection limit is reached" },
  STORE_UNAVAILABLE: { status: 503, title: 'A backing store the route depends on is unavailable' },
  AUTH_UNAVAILABLE: { status: 503, title: 'The authentication key source is unavailable' },
  AUTHORIZER_UNAVAILABLE: { status: 503, title: 'The external authorizer or introspection endpoint did not answer' },
  SHUTTING_DOWN: { status: 503, title: 'The gateway is shutting down' },
  UPSTREAM_TIMEOUT: { status: 504, title: 'The upstream did not answer in time' },
  UPSTREAM_CONNECT_TIMEOUT: { status: 504, title: 'Connecting to the upstream timed out' },
  HTTP_VERSION_NOT_SUPPORTED: { status: 505, title: 'HTTP version not supported; use HTTP/1.1' },
  INTERNAL: { status: 500, title: 'Internal gateway error' },
} as const satisfies Record<string, { status: number; title: string }>;

export type ErrorCode = keyof typeof ERRORS;

export interface ProblemOptions {
  detail?: string;
  /** Extra response headers, such as Allow, Retry-After or WWW-Authenticate. */
  headers?: Record<string, string | number>;
  /** Headers chain steps added for the client (CORS, rate-limit state), as name/value pairs. */
  extra?: readonly string[] | null;
  cause?: unknown;
}

/** A failure the gateway turns into a problem+json answer with a stable code. */
export class GatewayError extends Error {
  readonly code: ErrorCode;
  readonly status: number;
  readonly headers?: Record<string, string | number>;

  constructor(code: ErrorCode, opts: ProblemOptions = {}) {
    super(opts.detail ?? ERRORS[code].title, { cause: opts.cause });
    this.name = 'GatewayError';
    this.code = code;
    this.status = ERRORS[code].status;
    this.headers = opts.headers;
  }
}

export const PROBLEM_CONTENT_TYPE = 'application/problem+json';

export function problemBody(code: ErrorCode, requestId: string, detail?: string): string {
  const def = ERRORS[code];
  return JSON.stringify({
    type: `urn:gateway:error:${code.toLowerCase()}`,
    title: def.title,
    status: def.status,
    code,
    detail: detail ?? def.title,
    requestId,
  });
}

/**
 * The request announced a body that has not fully arrived. An answer given now ends the connection
 * (Connection: close): otherwise Node reads and discards the rest of the body, however large, to
 * reuse the connection. A body small enough to arrive with the head is not parsed yet either when
 * the chain answers synchronously, so such a request loses its connection too; only error answers
 * pay for that.
 */
export function bodyPending(req: IncomingMessage): boolean {
  if (req.complete) return false;
  const length = req.headers['content-length'];
  return (length !== undefined && length !== '0') || req.headers['transfer-encoding'] !== undefined;
}

/**
 * Writes a problem answer straight to the socket-level response (the relay hijacks Fastify's reply).
 * When headers already went out the only honest thing left is to cut the connection so the client
 * cannot mistake a partial body for a complete one.
 */
export function sendProblem(
  res: ServerResponse,
  requestId: string,
  code: ErrorCode,
  opts: ProblemOptions = {},
): void {
  if (res.headersSent) {
    res.destroy();
    return;
  }
  if (res.destroyed) return;
  // A gRPC client reads gRPC statuses, whatever the route: a problem+json body would be a framing error to it.
  if (isGrpcRequest(res.req)) return sendGrpcError(res, requestId, code, opts);
  if (res.req !== undefined && bodyPending(res.req)) res.shouldKeepAlive = false;
  const body = problemBody(code, requestId, opts.detail);
  const headers: Record<string, string | number> = {
    'content-type': PROBLEM_CONTENT_TYPE,
    'content-length': Buffer.byteLength(body),
    'x-request-id': requestId,
    'cache-control': 'no-store',
    ...opts.headers,
  };
  if (opts.extra) {
    const list: string[] = [];
    for (const [k, v] of Object.entries(headers)) list.push(k, String(v));
    for (const h of opts.extra) list.push(h);
    res.writeHead(ERRORS[code].status, list);
  } else {
    res.writeHead(ERRORS[code].status, headers);
  }
  res.end(body);
}

import type { IncomingMessage, ServerResponse } from 'node:http';
import type { Http2ServerResponse, OutgoingHttpHeaders } from 'node:http2';
import { ERRORS, type ErrorCode, type ProblemOptions } from '../errors';

/** gRPC status codes (grpc/doc/statuscodes.md) the gateway answers with. */
export const GRPC = {
  OK: 0,
  CANCELLED: 1,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

/**
 * The gRPC status of a gateway error, by its HTTP status, as gRPC maps HTTP statuses
 * (grpc/doc/http-grpc-status-mapping.md) where it has one: 404 is UNIMPLEMENTED (no such method),
 * 429 RESOURCE_EXHAUSTED (also 413 and 431: a message or metadata too large), 408 and 504
 * DEADLINE_EXCEEDED, 502 and 503 UNAVAILABLE (what clients retry), other 4xx INVALID_ARGUMENT.
 */
export function grpcStatusOf(code: ErrorCode): number {
  const status = ERRORS[code].status;
  switch (status) {
    case 401:
      return GRPC.UNAUTHENTICATED;
    case 403:
      return GRPC.PERMISSION_DENIED;
    case 404:
    case 405:
      return GRPC.UNIMPLEMENTED;
    case 408:
    case 504:
      return GRPC.DEADLINE_EXCEEDED;
    case 413:
    case 429:
    case 431:
      return GRPC.RESOURCE_EXHAUSTED;
    case 502:
    case 503:
      return GRPC.UNAVAILABLE;
  }
  return status >= 400 && status < 500 ? GRPC.INVALID_ARGUMENT : GRPC.INTERNAL;
}

/** A gRPC request: its content type is application/grpc, alone or with a +codec suffix (gRPC over HTTP/2 spec). */
export function isGrpcRequest(req: IncomingMessage | undefined): boolean {
  const type = req?.headers['content-type'];
  return type !== undefined && type.startsWith('application/grpc') && (type.length === 16 || type.charCodeAt(16) === 43 /* + */ || type.charCodeAt(16) === 59 /* ; */);
}

/** grpc-message is percent-encoded (gRPC over HTTP/2 spec): bytes outside printable ASCII and "%" itself. */
export function encodeGrpcMessage(message: string): string {
  let out = '';
  for (const byte of Buffer.from(message, 'utf8')) {
    out += byte >= 0x20 && byte <= 0x7e && byte !== 0x25 ? String.fromCharCode(byte) : `%${byte.toString(16).toUpperCase().padStart(2, '0')}`;
  }
  return out;
}

/**
 * A gateway error as a gRPC answer: HTTP 200, application/grpc, and the status in the one HEADERS
 * frame that ends the stream (trailers-only). The gateway's code and the problem's extra headers
 * (Retry-After, rate-limit state, CORS) travel as metadata.
 */
export function sendGrpcError(res: ServerResponse, requestId: string, code: ErrorCode, opts: ProblemOptions): void {
  const list: string[] = [
    'content-type',
    'application/grpc',
    'grpc-status',
    String(grpcStatusOf(code)),
    'grpc-message',
    encodeGrpcMessage(opts.detail ?? ERRORS[code].title),
    'x-gateway-error',
    code,
    'x-request-id',
    requestId,
  ];
  if (opts.headers) for (const [k, v] of Object.entries(opts.headers)) list.push(k.toLowerCase(), String(v));
  if (opts.extra) for (const h of opts.extra) list.push(h);
  endTrailersOnly(res, 200, list);
}

/**
 * Answers with a head that ends the stream. node:http2's compatibility response always sends
 * trailers after the head (an empty HEADERS frame at least), which a gRPC client reads as trailers
 * without grpc-status: so an HTTP/2 response goes through its stream. HTTP/1.1 has no such frame;
 * the head carries the status there.
 */
export function endTrailersOnly(res: ServerResponse, status: number, list: readonly string[]): void {
  const stream = (res as unknown as Http2ServerResponse).stream;
  if (stream === undefined) {
    res.writeHead(status, list as string[]);
    res.end();
    return;
  }
  // The client may have cancelled the stream meanwhile (its own deadline).
  if (stream.destroyed || stream.closed) return;
  const headers: OutgoingHttpHeaders = { ':status': status };
  for (let i = 0; i < list.length; i += 2) {
    const name = list[i].toLowerCase();
    const prev = headers[name];
    headers[name] = prev === undefined ? list[i + 1] : Array.isArray(prev) ? [...prev, list[i + 1]] : [String(prev), list[i + 1]];
  }
  res.statusCode = status;
  stream.respond(headers, { endStream: true });
}

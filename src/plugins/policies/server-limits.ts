import { STATUS_CODES, type Server, type ServerOptions, type ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import type { FastifyBaseLogger } from 'fastify';
import { ERRORS, PROBLEM_CONTENT_TYPE, problemBody, sendProblem, type ErrorCode } from '../../errors';
import type { LimitsConfig } from './schema';

/** The Fastify options that carry the listener's limits: header size, head and whole-request timeouts. */
export interface ServerLimitOptions {
  http: ServerOptions;
  requestTimeout: number;
  clientErrorHandler: (err: Error & { code?: string }, socket: Socket) => void;
}

function errorCode(err: { code?: string; message?: string }): ErrorCode {
  switch (err.code) {
    case 'HPE_HEADER_OVERFLOW':
      return 'HEADERS_TOO_LARGE';
    case 'ERR_HTTP_REQUEST_TIMEOUT':
      return 'REQUEST_TIMEOUT';
    case 'HPE_INVALID_VERSION':
      // A well-formed version Node does not speak (HTTP/1.2, HTTP/3.0); llhttp says "Invalid major /
      // minor version" for a malformed one and "Expected CRLF after version" for a bad line end.
      return err.message?.includes('Invalid HTTP version') ? 'HTTP_VERSION_NOT_SUPPORTED' : 'BAD_REQUEST';
    case 'HPE_PAUSED_H2_UPGRADE':
      // The HTTP/2 connection preface (PRI * HTTP/2.0) on this HTTP/1.1 listener.
      return 'HTTP_VERSION_NOT_SUPPORTED';
    default:
      return 'BAD_REQUEST';
  }
}

/**
 * Node checks the head and request deadlines on a timer (connectionsCheckingInterval, 30 s by
 * default), which would let a client overstay a short deadline by that much: check at a quarter of
 * the shortest deadline instead, within [50 ms, 30 s].
 */
function checkingInterval(limits: LimitsConfig): number {
  const shortest = limits.requestTimeoutMs > 0 ? Math.min(limits.headersTimeoutMs, limits.requestTimeoutMs) : limits.headersTimeoutMs;
  return Math.min(30000, Math.max(50, Math.floor(shortest / 4)));
}

/**
 * Node answers malformed, oversized (431) and slow (408) requests on the raw socket, before or
 * outside the chain. These answers become problem+json like every other gateway error: through the
 * request's own response when one exists (so it is logged and counted), on the socket otherwise.
 */
export function serverLimitOptions(
  limits: LimitsConfig,
  log: () => FastifyBaseLogger,
  /** The request id for a client's X-Request-Id header (kept when sane, generated otherwise). */
  requestId: (incoming: string | string[] | undefined) => string,
): ServerLimitOptions {
  return {
    http: {
      maxHeaderSize: limits.maxHeaderBytes,
      headersTimeout: limits.headersTimeoutMs,
      requestTimeout: limits.requestTimeoutMs,
      connectionsCheckingInterval: checkingInterval(limits),
      // The chain refuses an HTTP/1.1 request without Host itself (strict-http.ts), in problem+json:
      // Node's own check answers a bare 400 with an empty chunked body.
      requireHostHeader: false,
    },
    requestTimeout: limits.requestTimeoutMs,
    clientErrorHandler(err, socket) {
      if (err.code === 'ECONNRESET' || socket.destroyed) return;
      const code = errorCode(err);
      log().debug({ err: { message: err.message, code: err.code } }, 'client error');
      const res = (socket as { _httpMessage?: ServerResponse })._httpMessage;
      if (res != null && res.req != null) {
        if (!res.headersSent) {
          res.shouldKeepAlive = false;
          sendProblem(res, requestId(res.req.headers['x-request-id']), code);
          return;
        }
      } else if (socket.writable) {
        const id = requestId(undefined);
        const body = problemBody(code, id);
        const status = ERRORS[code].status;
        socket.write(
          `HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\ncontent-type: ${PROBLEM_CONTENT_TYPE}\r\n` +
            `content-length: ${Buffer.byteLength(body)}\r\nx-request-id: ${id}\r\ncache-control: no-store\r\nconnection: close\r\n\r\n${body}`,
        );
      }
      socket.destroy();
    },
  };
}

/**
 * Closes connections that have not sent a byte `ms` after they opened, without an answer (as nginx
 * does at client_header_timeout). Node's headersTimeout closes them too, but with a 408 and only
 * after the head deadline, which is sized for slow clients rather than silent ones. A connection
 * that has sent anything is left to headersTimeout and requestTimeout: the timer looks at nothing
 * per request, only once per connection.
 */
export function closeSilentConnections(server: Server, ms: number): void {
  if (ms === 0) return;
  server.on('connection', (socket: Socket) => {
    const timer = setTimeout(closeIfSilent, ms, socket);
    timer.unref();
    socket.once('close', () => clearTimeout(timer));
  });
}

function closeIfSilent(socket: Socket): void {
  if (socket.bytesRead === 0) socket.destroy();
}

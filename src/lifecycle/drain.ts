import type { Server, ServerResponse } from 'node:http';
import type { Socket } from 'node:net';
import { Server as TlsServer } from 'node:tls';
import type { Http2Sessions } from '../net/http2';

/** A client connection, with the response it is serving (Node's own field, as in server-limits.ts). */
type ClientSocket = Socket & { _httpMessage?: ServerResponse | null };

/**
 * Ends the public listener's client connections as soon as each is done, once the gateway drains.
 * Node's server.close() closes the connections idle at that moment and then waits for every other
 * one, and a keep-alive connection whose response went out after it stays open until the client
 * closes it: a drain would last until shutdown.timeoutMs. So when the drain starts, a response not
 * yet begun goes out with `Connection: close`, a connection idle now is closed, and one whose
 * response is already streaming (its keep-alive promised) is closed as that response ends.
 * Responses begun during the drain carry `Connection: close` too (the chain's isDraining check).
 */
export class ConnectionDrain {
  private readonly sockets = new Set<ClientSocket>();
  private draining = false;
  private readonly closeIdle = (): void => {
    setImmediate(() => this.closeIdleConnections());
  };

  /** The public listeners: the plain one, the TLS one, or both. */
  constructor(
    private readonly servers: readonly Server[],
    /** HTTP/2 sessions get GOAWAY when the drain starts: their streams in flight finish, new ones go elsewhere. */
    private readonly http2: Http2Sessions,
  ) {
    for (const server of servers) {
      // Per connection, not per request: the set is only read when the drain starts. On a TLS
      // listener the HTTP layer serves the TLS socket, which 'secureConnection' hands over.
      server.on(server instanceof TlsServer ? 'secureConnection' : 'connection', (socket: ClientSocket) => {
        this.sockets.add(socket);
        socket.once('close', () => this.sockets.delete(socket));
      });
    }
  }

  private closeIdleConnections(): void {
    // An h2c server has no HTTP/1.1 connections, and no closeIdleConnections.
    for (const server of this.servers) server.closeIdleConnections?.();
  }

  start(): void {
    if (this.draining) return;
    this.draining = true;
    this.http2.goAway();
    for (const socket of this.sockets) {
      const res = socket._httpMessage;
      if (res == null) continue;
      if (!res.headersSent) res.shouldKeepAlive = false;
      else if (res.shouldKeepAlive) res.once('close', this.closeIdle);
    }
    this.closeIdleConnections();
  }

  /** Client connections still open. */
  get open(): number {
    return this.sockets.size;
  }
}

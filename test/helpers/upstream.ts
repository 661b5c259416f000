import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

export interface SeenRequest {
  method: string;
  url: string;
  headers: IncomingMessage['headers'];
  rawHeaders: string[];
  body: string;
  /** The request body arrived complete (false when the gateway aborted it). */
  complete: boolean;
}

export interface TestUpstream {
  url: string;
  port: number;
  server: Server;
  /** Every request received, in order. */
  seen: SeenRequest[];
  close(): Promise<void>;
}

export type UpstreamHandler = (req: IncomingMessage, res: ServerResponse, body: string) => void | Promise<void>;

/**
 * A real HTTP upstream on 127.0.0.1:0 that records what reached it. The default handler answers
 * 200 with a JSON echo of the request.
 */
export async function startUpstream(handler?: UpstreamHandler, port = 0): Promise<TestUpstream> {
  const seen: SeenRequest[] = [];
  const sockets = new Set<Socket>();
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    const entry: SeenRequest = {
      method: req.method ?? '',
      url: req.url ?? '',
      headers: req.headers,
      rawHeaders: req.rawHeaders,
      body: '',
      complete: false,
    };
    seen.push(entry);
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('error', () => undefined);
    req.on('end', () => {
      entry.body = Buffer.concat(chunks).toString('utf8');
      entry.complete = true;
      if (handler) {
        Promise.resolve(handler(req, res, entry.body)).catch(() => res.destroy());
        return;
      }
      const body = JSON.stringify({ method: req.method, url: req.url, headers: req.headers, body: entry.body });
      res.writeHead(200, { 'content-type': 'application/json', 'content-length': Buffer.byteLength(body) });
      res.end(body);
    });
  });
  server.on('connection', (s: Socket) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(port, '127.0.0.1', resolve));
  const actual = (server.address() as AddressInfo).port;
  return {
    url: `http://127.0.0.1:${actual}`,
    port: actual,
    server,
    seen,
    close: () =>
      new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

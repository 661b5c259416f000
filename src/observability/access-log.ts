import { hostname } from 'node:os';
import pino from 'pino';
import type { FastifyBaseLogger } from 'fastify';

const FLUSH_BYTES = 16 * 1024;
const FLUSH_MS = 200;

export interface AccessEntry {
  reqId: string;
  route: string | undefined;
  method: string;
  path: string;
  status: number;
  ms: number;
  upstreamMs: number;
  client: string;
  error: string | null;
  truncated: boolean;
}

const round2 = (n: number): number => Math.round(n * 100) / 100;

/**
 * The per-request access line, in the same JSON shape as the gateway's pino lines and written to the
 * same destination. Built as a string and written in batches: going through pino per request cost a
 * measurable share of the gateway's CPU per request (see the bench's gateway-no-access-log scenario).
 */
export class AccessLog {
  private buffer = '';
  private readonly prefix: string;
  private readonly timer: NodeJS.Timeout;
  private readonly stream: { write(chunk: string): unknown };

  constructor(logger: FastifyBaseLogger) {
    this.stream = (logger as unknown as Record<symbol, { write(chunk: string): unknown }>)[pino.symbols.streamSym];
    this.prefix = `{"level":30,"pid":${process.pid},"hostname":${JSON.stringify(hostname())},"time":`;
    this.timer = setInterval(() => this.flush(), FLUSH_MS);
    this.timer.unref();
  }

  write(e: AccessEntry): void {
    // Request ids, route names, methods, addresses and error codes are validated tokens: only the
    // path can need escaping.
    let line = `${this.prefix}${Date.now()},"reqId":"${e.reqId}","method":"${e.method}","path":${JSON.stringify(e.path)},"status":${e.status},"ms":${round2(e.ms)}`;
    if (e.route !== undefined) line += `,"route":"${e.route}"`;
    if (e.upstreamMs >= 0) line += `,"upstreamMs":${round2(e.upstreamMs)}`;
    if (e.client) line += `,"client":"${e.client}"`;
    if (e.error !== null) line += `,"error":"${e.error}"`;
    if (e.truncated) line += ',"truncated":true';
    this.buffer += `${line},"msg":"request completed"}\n`;
    if (this.buffer.length >= FLUSH_BYTES) this.flush();
  }

  flush(): void {
    if (this.buffer === '') return;
    const chunk = this.buffer;
    this.buffer = '';
    this.stream.write(chunk);
  }

  close(): void {
    clearInterval(this.timer);
    this.flush();
  }
}

import { hostname } from 'node:os';
import pino from 'pino';
import type { FastifyBaseLogger } from 'fastify';
import type { RequestContext } from '../context';

const FLUSH_BYTES = 16 * 1024;
const FLUSH_MS = 200;

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

  /** The line of a finished request (read straight from its context: no entry object per request). */
  write(ctx: RequestContext, method: string, status: number, ms: number, truncated: boolean): void {
    // Request ids, route names, methods, addresses and error codes are validated tokens: only the
    // path can need escaping.
    let line = `${this.prefix}${Date.now()},"reqId":"${ctx.id}","method":"${method}","path":${JSON.stringify(ctx.path)},"status":${status},"ms":${round2(ms)}`;
    if (ctx.route !== undefined) line += `,"route":"${ctx.route.name}"`;
    if (ctx.upstreamMs >= 0) line += `,"upstreamMs":${round2(ctx.upstreamMs)}`;
    if (ctx.clientIp) line += `,"client":"${ctx.clientIp}"`;
    if (ctx.errorCode !== null) line += `,"error":"${ctx.errorCode}"`;
    if (truncated) line += ',"truncated":true';
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

import { hostname } from 'node:os';
import pino from 'pino';
import type { FastifyBaseLogger } from 'fastify';
import type { RequestContext } from '../context';

const FLUSH_BYTES = 64 * 1024;
/** Room past FLUSH_BYTES for the line that crosses it; a longer line is written on its own. */
const LINE_ROOM = 16 * 1024;
const FLUSH_MS = 200;

const TWO_DIGITS: readonly string[] = Array.from({ length: 100 }, (_, i) => (i < 10 ? '0' : '') + String(i));

/**
 * Milliseconds with at most two decimals, as a JSON number. Built from integers: the shortest
 * decimal form of a double (what String(n) computes) was a visible share of the line's cost.
 */
function millis(ms: number): string {
  const x = Math.round(ms * 100);
  if (!(x >= 0 && x <= 0x3fffffff)) return String(Math.round(ms * 100) / 100);
  const frac = x % 100;
  return frac === 0 ? String((x - frac) / 100) : `${(x - frac) / 100}.${frac % 10 === 0 ? String(frac / 10) : TWO_DIGITS[frac]}`;
}

/**
 * The per-request access line, in the same JSON shape as the gateway's pino lines and written to the
 * same destination. Built as a string and written in batches: going through pino per request cost a
 * measurable share of the gateway's CPU per request (see the bench's gateway-no-access-log scenario).
 * Each line is encoded into the batch's bytes while its pieces are still in the CPU cache: a batch
 * kept as one long string was flattened at flush, a visible share of the request path's CPU.
 */
export class AccessLog {
  private readonly bytes = Buffer.allocUnsafe(FLUSH_BYTES + LINE_ROOM);
  private used = 0;
  private readonly prefix: string;
  private readonly timer: NodeJS.Timeout;
  private readonly stream: { write(chunk: string): unknown };
  /** The line's opening up to the request id, remade once per millisecond (the time is not a small integer to print). */
  private head = '';
  private headAt = -1;

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
    const now = Date.now();
    if (now !== this.headAt) {
      this.headAt = now;
      this.head = `${this.prefix}${now},"reqId":"`;
    }
    let line = `${this.head}${ctx.id}","method":"${method}","path":${JSON.stringify(ctx.path)},"status":${status},"ms":${millis(ms)}`;
    if (ctx.route !== undefined) line += `,"route":"${ctx.route.name}"`;
    if (ctx.upstreamMs >= 0) line += `,"upstreamMs":${millis(ctx.upstreamMs)}`;
    if (ctx.clientIp) line += `,"client":"${ctx.clientIp}"`;
    if (ctx.errorCode !== null) line += `,"error":"${ctx.errorCode}"`;
    if (truncated) line += ',"truncated":true';
    line += ',"msg":"request completed"}\n';
    // UTF-8 takes at most 3 bytes per UTF-16 unit.
    if (line.length * 3 > LINE_ROOM) {
      this.flush();
      this.stream.write(line);
      return;
    }
    this.used += this.bytes.write(line, this.used);
    if (this.used >= FLUSH_BYTES) this.flush();
  }

  flush(): void {
    if (this.used === 0) return;
    const chunk = this.bytes.toString('utf8', 0, this.used);
    this.used = 0;
    this.stream.write(chunk);
  }

  close(): void {
    clearInterval(this.timer);
    this.flush();
  }
}

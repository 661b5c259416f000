import { hostname } from 'node:os';
import pino from 'pino';
import type { FastifyBaseLogger } from 'fastify';
import type { RequestContext } from '../context';

/** A batch is written once its lines hold this many characters. */
const FLUSH_CHARS = 64 * 1024;
const FLUSH_MS = 200;
/** Durations below this many hundredths of a millisecond (100 ms) keep their printed form. */
const MILLIS_KEPT = 10000;

const TWO_DIGITS: readonly string[] = Array.from({ length: 100 }, (_, i) => (i < 10 ? '0' : '') + String(i));

/**
 * Milliseconds with at most two decimals, as a JSON number. Built from integers: the shortest
 * decimal form of a double (what String(n) computes) was a visible share of the line's cost.
 */
function millis(ms: number): string {
  const x = Math.round(ms * 100);
  if (!(x >= 0 && x <= 0x3fffffff)) return String(Math.round(ms * 100) / 100);
  // `| 0` makes the parts small integers: a double with an integral value is still printed by dtoa.
  const frac = x % 100 | 0;
  const whole = ((x - frac) / 100) | 0;
  return frac === 0 ? String(whole) : `${whole}.${frac % 10 === 0 ? String((frac / 10) | 0) : TWO_DIGITS[frac]}`;
}

/** The path can go into the line as it is: printable ASCII without quotes or backslashes. */
function plainPath(path: string): boolean {
  for (let i = 0; i < path.length; i++) {
    const c = path.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) return false;
  }
  return true;
}

/**
 * The per-request access line, in the same JSON shape as the gateway's pino lines and written to the
 * same destination. Built as a string and written in batches: going through pino per request cost a
 * measurable share of the gateway's CPU per request (see the bench's gateway-no-access-log scenario).
 * A batch is a list of lines joined once at flush (one copy of each line's characters): encoding
 * each line into a byte buffer as it came, then decoding the batch back to a string for the
 * destination, cost three copies (0.50 against 0.32 µs per line in isolation, same instruction count
 * in the gateway).
 */
export class AccessLog {
  private lines: string[] = [];
  /** Characters in `lines`. */
  private used = 0;
  private readonly prefix: string;
  private readonly timer: NodeJS.Timeout;
  private readonly stream: { write(chunk: string): unknown };
  /** The line's opening up to the request id, remade once per millisecond (the time is not a small integer to print). */
  private head = '';
  private headAt = -1;

  private readonly methodPieces = new Map<string, string>();
  /** By status code (Node only sends 100-999). */
  private readonly statusPieces: string[] = [];
  /** By route name: routes come from the configuration, so these are few. */
  private readonly routePieces = new Map<string, string>();
  /** Durations as printed, by hundredths of a millisecond, below MILLIS_KEPT. */
  private readonly printedMillis: string[] = [];

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
    const plain = plainPath(ctx.path);
    // The fixed parts around each value come from tables filled as they are first needed: fewer
    // pieces to join per line (each join is an allocation), and no number printed twice.
    let line = plain
      ? `${this.head}${ctx.id}${this.methodPiece(method)}${ctx.path}${this.statusPiece(status)}${this.duration(ms)}`
      : `${this.head}${ctx.id}","method":"${method}","path":${JSON.stringify(ctx.path)},"status":${status},"ms":${millis(ms)}`;
    if (ctx.route !== undefined) line += this.routePiece(ctx.route.name);
    if (ctx.upstreamMs >= 0) line += `,"upstreamMs":${this.duration(ctx.upstreamMs)}`;
    if (ctx.clientIp) line += `,"client":"${ctx.clientIp}"`;
    if (ctx.errorCode !== null) line += `,"error":"${ctx.errorCode}"`;
    if (ctx.traceId !== '') line += `,"traceId":"${ctx.traceId}"`;
    if (truncated) line += ',"truncated":true';
    line += ',"msg":"request completed"}\n';
    this.lines.push(line);
    this.used += line.length;
    if (this.used >= FLUSH_CHARS) this.flush();
  }

  /** `","method":"GET","path":"`: from the end of the request id to the start of a plain path. */
  private methodPiece(method: string): string {
    let piece = this.methodPieces.get(method);
    if (piece === undefined) {
      piece = `","method":"${method}","path":"`;
      if (this.methodPieces.size < 64) this.methodPieces.set(method, piece);
    }
    return piece;
  }

  /** `","status":200,"ms":`: from the end of a plain path to the duration. */
  private statusPiece(status: number): string {
    return (this.statusPieces[status] ??= `","status":${status},"ms":`);
  }

  private routePiece(name: string): string {
    let piece = this.routePieces.get(name);
    if (piece === undefined) {
      piece = `,"route":"${name}"`;
      if (this.routePieces.size < 4096) this.routePieces.set(name, piece);
    }
    return piece;
  }

  /** millis(ms), from the table when the duration is a common one. */
  private duration(ms: number): string {
    const x = Math.round(ms * 100);
    return x >= 0 && x < MILLIS_KEPT ? (this.printedMillis[x] ??= millis(ms)) : millis(ms);
  }

  flush(): void {
    if (this.used === 0) return;
    const chunk = this.lines.join('');
    this.lines = [];
    this.used = 0;
    this.stream.write(chunk);
  }

  close(): void {
    clearInterval(this.timer);
    this.flush();
  }
}

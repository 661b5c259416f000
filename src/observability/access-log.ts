import pino from 'pino';
import type { ErrorCode } from '../errors';
import { grpcStatusOf, isGrpcRequest } from '../grpc/status';
import type { FastifyBaseLogger } from 'fastify';
import type { AccessField, GatewayConfig } from '../config/schema';
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

/** A string value that can go into a JSON line between quotes as it is: printable ASCII without quotes or backslashes. */
function plainJson(v: string): boolean {
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c < 0x20 || c > 0x7e || c === 0x22 || c === 0x5c) return false;
  }
  return true;
}

/** A logfmt value that needs no quotes: printable ASCII without spaces, quotes, backslashes or '='. */
function plainLogfmt(v: string): boolean {
  if (v.length === 0) return false;
  for (let i = 0; i < v.length; i++) {
    const c = v.charCodeAt(i);
    if (c <= 0x20 || c > 0x7e || c === 0x22 || c === 0x5c || c === 0x3d) return false;
  }
  return true;
}

const REDACTED = '[redacted]';

/** The query string with the values of the listed parameters replaced (names compared in lower case). */
export function redactQuery(query: string, names: ReadonlySet<string>): string {
  if (names.size === 0 || query.length < 2) return query;
  const parts = query.slice(1).split('&');
  for (let i = 0; i < parts.length; i++) {
    const eq = parts[i].indexOf('=');
    const raw = eq < 0 ? parts[i] : parts[i].slice(0, eq);
    let name: string;
    try {
      name = decodeURIComponent(raw.replace(/\+/g, ' ')).toLowerCase();
    } catch {
      name = raw.toLowerCase();
    }
    if (names.has(name)) parts[i] = `${raw}=${REDACTED}`;
  }
  return `?${parts.join('&')}`;
}

export type AccessLogOptions = Pick<GatewayConfig['log'], 'accessFormat' | 'accessFields' | 'accessHeaders' | 'redactQuery' | 'redactHeaders'>;

/** One field of the line: its text with the separator and key in front, or '' when it has no value. */
type FieldWriter = (ctx: RequestContext, method: string, status: number, ms: number) => string;

/**
 * The per-request access line, written to the logger's destination, JSON (the shape of the
 * gateway's pino lines, level as a word) or logfmt. Built as a string from writers chosen at
 * start-up for the configured fields, and written in batches: going through pino per request cost a
 * measurable share of the gateway's CPU per request (see the bench's gateway-no-access-log scenario).
 * A batch is a list of lines joined once at flush (one copy of each line's characters): encoding
 * each line into a byte buffer as it came, then decoding the batch back to a string for the
 * destination, cost three copies (0.50 against 0.32 µs per line in isolation, same instruction count
 * in the gateway). Lines are written in the order requests completed.
 */
export class AccessLog {
  private lines: string[] = [];
  /** Characters in `lines`. */
  private used = 0;
  private readonly timer: NodeJS.Timeout;
  private readonly stream: { write(chunk: string): unknown };
  private readonly json: boolean;
  /** The line's opening (time and level), remade once per millisecond. */
  private head = '';
  private headAt = -1;
  private readonly writers: FieldWriter[];
  private readonly tail: string;

  private readonly methodPieces = new Map<string, string>();
  /** By status code (Node only sends 100-999). */
  private readonly statusPieces: string[] = [];
  /** By route name: routes come from the configuration, so these are few. */
  private readonly routePieces = new Map<string, string>();
  /** Durations as printed, by hundredths of a millisecond, below MILLIS_KEPT. */
  private readonly printedMillis: string[] = [];

  /**
   * @param maxWrite Most bytes per write, cut at line ends: the workers of one process share stdout,
   * and a write of at most PIPE_BUF bytes to a pipe is never mixed with another's (null: one write per batch).
   */
  constructor(
    logger: FastifyBaseLogger,
    opts: AccessLogOptions,
    private readonly maxWrite: number | null = null,
  ) {
    this.stream = (logger as unknown as Record<symbol, { write(chunk: string): unknown }>)[pino.symbols.streamSym];
    this.json = opts.accessFormat === 'json';
    this.writers = opts.accessFields.map((f) => this.writer(f, opts));
    const sensitive = new Set(opts.redactHeaders.map((h) => h.toLowerCase()));
    for (const h of opts.accessHeaders) {
      const name = h.toLowerCase();
      const key = this.key(`header.${name}`);
      this.writers.push(
        sensitive.has(name)
          ? (ctx) => (ctx.req.headers[name] === undefined ? '' : key + this.str(REDACTED))
          : (ctx) => {
              const v = ctx.req.headers[name];
              return v === undefined ? '' : key + this.str(Array.isArray(v) ? v.join(', ') : v);
            },
      );
    }
    this.tail = this.json ? ',"msg":"request completed"}\n' : ' msg="request completed"\n';
    this.timer = setInterval(() => this.flush(), FLUSH_MS);
    this.timer.unref();
  }

  /** `,"name":` or ` name=`. */
  private key(name: string): string {
    return this.json ? `,"${name}":` : ` ${name}=`;
  }

  /** A string value, quoted and escaped as the format needs. */
  private str(v: string): string {
    if (this.json) return plainJson(v) ? `"${v}"` : JSON.stringify(v);
    return plainLogfmt(v) ? v : JSON.stringify(v);
  }

  private writer(field: AccessField, opts: AccessLogOptions): FieldWriter {
    const key = this.key(field);
    const text = (get: (ctx: RequestContext) => string | null | undefined): FieldWriter => (ctx) => {
      const v = get(ctx);
      return v ? key + this.str(v) : '';
    };
    switch (field) {
      case 'reqId':
        // Request ids are validated tokens: no quoting needed.
        return this.json ? (ctx) => `${key}"${ctx.id}"` : (ctx) => key + ctx.id;
      case 'traceId':
        // Trace ids are hex (the gateway's, or a validated traceparent's): no quoting needed.
        return this.json ? (ctx) => (ctx.traceId === '' ? '' : `${key}"${ctx.traceId}"`) : (ctx) => (ctx.traceId === '' ? '' : key + ctx.traceId);
      case 'method':
        return (_ctx, method) => this.methodPiece(method);
      case 'host':
        return text((ctx) => ctx.req.headers.host);
      case 'path':
        return (ctx) => key + this.str(ctx.path);
      case 'query': {
        const names = new Set(opts.redactQuery.map((q) => q.toLowerCase()));
        return (ctx) => (ctx.query === '' ? '' : key + this.str(redactQuery(ctx.query, names)));
      }
      case 'status':
        return (_ctx, _method, status) => (this.statusPieces[status] ??= `${key}${status}`);
      case 'route':
        return (ctx) => (ctx.route === undefined ? '' : this.routePiece(ctx.route.name));
      case 'target':
        return text((ctx) => ctx.target?.url);
      case 'consumer':
        return text((ctx) => ctx.identity?.consumerId);
      case 'client':
        return text((ctx) => ctx.clientIp);
      case 'userAgent':
        return text((ctx) => ctx.req.headers['user-agent']);
      case 'bytesIn':
        return (ctx) => key + ctx.bytesIn;
      case 'bytesOut':
        return (ctx) => key + ctx.bytesOut;
      case 'ms':
        return (_ctx, _method, _status, ms) => key + this.duration(ms);
      case 'upstreamMs':
        return (ctx) => (ctx.upstreamMs >= 0 ? key + this.duration(ctx.upstreamMs) : '');
      case 'cache':
        return text((ctx) => ctx.cacheResult);
      case 'rateLimit':
        return text((ctx) => ctx.rateLimitResult);
      case 'error':
        return text((ctx) => ctx.errorCode);
      case 'grpcStatus':
        // The upstream's grpc-status, or the one the gateway answered a gRPC request's error with.
        return text((ctx) => ctx.grpcStatus ?? (ctx.errorCode !== null && isGrpcRequest(ctx.req) ? String(grpcStatusOf(ctx.errorCode as ErrorCode)) : undefined));
    }
  }

  /** The line of a finished request (read straight from its context: no entry object per request). */
  write(ctx: RequestContext, method: string, status: number, ms: number, truncated: boolean): void {
    const now = Date.now();
    if (now !== this.headAt) {
      this.headAt = now;
      const time = new Date(now).toISOString();
      this.head = this.json ? `{"time":"${time}","level":"info"` : `time=${time} level=info`;
    }
    let line = this.head;
    const writers = this.writers;
    for (let i = 0; i < writers.length; i++) line += writers[i](ctx, method, status, ms);
    if (truncated) line += this.json ? ',"truncated":true' : ' truncated=true';
    line += this.tail;
    this.lines.push(line);
    this.used += line.length;
    if (this.used >= FLUSH_CHARS) this.flush();
  }

  private methodPiece(method: string): string {
    let piece = this.methodPieces.get(method);
    if (piece === undefined) {
      piece = this.key('method') + this.str(method);
      if (this.methodPieces.size < 64) this.methodPieces.set(method, piece);
    }
    return piece;
  }

  private routePiece(name: string): string {
    let piece = this.routePieces.get(name);
    if (piece === undefined) {
      piece = this.key('route') + this.str(name);
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
    const lines = this.lines;
    this.lines = [];
    this.used = 0;
    if (this.maxWrite === null) {
      this.stream.write(lines.join(''));
      return;
    }
    let from = 0;
    let bytes = 0;
    for (let i = 0; i < lines.length; i++) {
      const n = Buffer.byteLength(lines[i]);
      if (bytes + n > this.maxWrite && i > from) {
        this.stream.write(lines.slice(from, i).join(''));
        from = i;
        bytes = 0;
      }
      bytes += n;
    }
    this.stream.write(lines.slice(from).join(''));
  }

  close(): void {
    clearInterval(this.timer);
    this.flush();
  }
}

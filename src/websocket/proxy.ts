import { request as httpRequest, ServerResponse, type ClientRequest, type IncomingMessage, type Server } from 'node:http';
import { request as httpsRequest } from 'node:https';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import type { Duplex } from 'node:stream';
import type { FastifyBaseLogger } from 'fastify';
import { runSteps } from '../chain';
import { RequestContext } from '../context';
import { GatewayError, sendProblem, type ErrorCode } from '../errors';
import { speaksHttp1, takeAbsoluteForm, versionError } from '../net/strict-http';
import type { AccessLog } from '../observability/access-log';
import type { CounterCell, CounterFamily, GaugeCell, GaugeFamily } from '../observability/fast-metrics';
import type { GatewayMetrics } from '../observability/metrics';
import { errorKind, statusKind } from '../proxy/failures';
import { copyRequestHeaders, HOP_BY_HOP, type ClientHeaderFacts } from '../proxy/headers';
import type { Target } from '../proxy/upstreams';
import { upstreamErrorCode } from '../proxy/upstream-errors';
import type { CompiledRoute } from '../routes';
import { hasPathParameters, normalizePath } from '../routing/normalize';
import { hostName } from '../routing/router';
import type { Runtime } from '../runtime';
import { closeFrame, GOING_AWAY } from './frames';

export interface WebSocketDeps {
  runtime(): Runtime;
  /** The request id of a request carrying `header` as X-Request-Id (the same rule as Fastify's genReqId). */
  requestId(header: string | string[] | undefined): string;
  metrics: GatewayMetrics;
  accessLog: AccessLog | null;
  log: FastifyBaseLogger;
}

/** What became of an upgrade: the `result` label of gateway_websocket_upgrades_total. */
type UpgradeResult = 'upgraded' | 'refused' | 'not_allowed' | 'limited' | 'unavailable' | 'upstream_refused' | 'upstream_failed' | 'client_closed';

/** Seconds a client refused for the route's connection limit is told to wait. */
const LIMIT_RETRY_AFTER_S = 1;

/**
 * How long a closed WebSocket waits for its peers to finish the close handshake before its sockets
 * are destroyed: short, so a drain never waits on a peer that does not answer.
 */
const CLOSE_GRACE_MS = 1000;

const noop = (): void => undefined;

/** An Upgrade header naming websocket (a list may name several protocols; RFC 9110 §7.8). */
function asksWebSocket(value: string | undefined): boolean {
  if (value === undefined) return false;
  for (const token of value.split(',')) if (token.trim().toLowerCase() === 'websocket') return true;
  return false;
}

function announcesBody(req: IncomingMessage): boolean {
  const length = req.headers['content-length'];
  return (length !== undefined && length !== '0') || req.headers['transfer-encoding'] !== undefined;
}

/** One upgrade request, from its arrival to its answer (101, or a refusal). */
class Upgrade {
  /** What the answer is counted as, unless it is a 101. */
  result: UpgradeResult = 'refused';
  recorded = false;
  tunnel: Tunnel | null = null;

  constructor(
    readonly ctx: RequestContext,
    /** Bytes that came after the head (frames a client sent before the 101). */
    readonly head: Buffer,
  ) {}
}

/** Per-route metric cells, resolved once per WebSocket. */
interface TunnelCells {
  open: GaugeCell;
  toUpstream: CounterCell;
  toClient: CounterCell;
  messagesToUpstream: CounterCell;
  messagesToClient: CounterCell;
}

/**
 * One direction of a tunnel. It follows frame boundaries (RFC 6455 §5.2) as bytes pass, reading
 * frame headers only, so that a close frame of the gateway's goes between two frames, never into
 * the middle of one still passing (which the peer would read as payload, then fail the connection).
 */
class Direction {
  /** Payload bytes of the current frame still to pass. */
  private left = 0;
  /** The frame header being read (2 to 14 bytes), `have` of `need` bytes so far. */
  private readonly header = Buffer.alloc(14);
  private have = 0;
  private need = 2;
  /** The gateway's close frame, waiting for the next boundary; nothing passes after it. */
  private pending: Buffer | null = null;
  private ended = false;

  constructor(
    private readonly to: Socket,
    private readonly bytes: CounterCell,
    private readonly messages: CounterCell,
  ) {}

  /** Passes `chunk` on; false when `to` asks the sender to pause. */
  pass(chunk: Buffer): boolean {
    if (this.ended) return true;
    if (this.pending === null) {
      this.bytes.inc(chunk.length);
      this.walk(chunk, false);
      return this.to.write(chunk);
    }
    const at = this.walk(chunk, true);
    if (at > 0) {
      this.bytes.inc(at);
      this.to.write(at === chunk.length ? chunk : chunk.subarray(0, at));
    }
    if (this.left === 0 && this.have === 0) this.finish();
    return true;
  }

  /**
   * Sends `frame` at the next frame boundary (now if there is no frame passing); nothing passes
   * after it. The socket stays open for the peer's close reply (RFC 6455 §7.1.1): peers end the
   * connection, or the tunnel's grace timer does.
   */
  close(frame: Buffer): void {
    if (this.ended || this.pending !== null) return;
    this.pending = frame;
    if (this.left === 0 && this.have === 0) this.finish();
  }

  private finish(): void {
    this.ended = true;
    this.to.write(this.pending!);
  }

  /** Moves the frame cursor over `chunk`; with `toBoundary` it stops at the first boundary. Returns where it stopped. */
  private walk(chunk: Buffer, toBoundary: boolean): number {
    const n = chunk.length;
    let i = 0;
    while (i < n) {
      if (this.left > 0) {
        const k = Math.min(this.left, n - i);
        this.left -= k;
        i += k;
        continue;
      }
      if (toBoundary && this.have === 0) return i;
      const h = this.header;
      h[this.have++] = chunk[i++];
      if (this.have === 2) {
        const len7 = h[1] & 0x7f;
        this.need = 2 + (h[1] & 0x80 ? 4 : 0) + (len7 === 126 ? 2 : len7 === 127 ? 8 : 0);
      }
      if (this.have === this.need) {
        // The last frame of a data message (FIN set, not a control opcode) completes a message.
        if ((h[0] & 0x88) === 0x80) this.messages.inc();
        const len7 = h[1] & 0x7f;
        this.left = len7 === 126 ? h.readUInt16BE(2) : len7 === 127 ? Number(h.readBigUInt64BE(2)) : len7;
        this.have = 0;
        this.need = 2;
      }
    }
    return i;
  }
}

/**
 * One WebSocket through the gateway, from admission (it holds a slot of the route's limit from
 * then on) to the close of both sockets. Frames are relayed as bytes, never parsed.
 */
class Tunnel {
  upstreamSocket: Socket | null = null;
  private toUpstream: Direction | null = null;
  private toClient: Direction | null = null;
  private released = false;
  private closing: Promise<void> | null = null;
  private lifetime: NodeJS.Timeout | null = null;
  private cells: TunnelCells | null = null;
  private readonly closed: Promise<void>;
  private resolveClosed!: () => void;

  constructor(
    readonly owner: WebSockets,
    readonly route: CompiledRoute,
    readonly client: Socket,
  ) {
    this.closed = new Promise((r) => (this.resolveClosed = r));
  }

  /** Gives the route's slot back; once. */
  release(): void {
    if (this.released) return;
    this.released = true;
    this.owner.leave(this);
    if (this.lifetime !== null) clearTimeout(this.lifetime);
    this.cells?.open.dec();
    this.resolveClosed();
  }

  /** Joins the two sockets: bytes flow both ways untouched, with backpressure, until either side closes. */
  open(upstream: Socket, cells: TunnelCells, clientHead: Buffer, upstreamHead: Buffer): void {
    const client = this.client;
    this.upstreamSocket = upstream;
    this.cells = cells;
    cells.open.inc();
    client.setNoDelay(true);
    upstream.setNoDelay(true);
    const toUpstream = (this.toUpstream = new Direction(upstream, cells.toUpstream, cells.messagesToUpstream));
    const toClient = (this.toClient = new Direction(client, cells.toClient, cells.messagesToClient));
    if (upstreamHead.length > 0) toClient.pass(upstreamHead);
    if (clientHead.length > 0) toUpstream.pass(clientHead);
    client.on('data', (chunk: Buffer) => {
      if (!toUpstream.pass(chunk)) client.pause();
    });
    upstream.on('data', (chunk: Buffer) => {
      if (!toClient.pass(chunk)) upstream.pause();
    });
    client.on('drain', () => upstream.resume());
    upstream.on('drain', () => client.resume());
    client.on('end', () => upstream.end());
    upstream.on('end', () => client.end());
    client.on('error', noop);
    upstream.on('error', noop);
    let sockets = 2;
    const closed = (): void => {
      client.destroy();
      upstream.destroy();
      if (--sockets === 0) this.release();
    };
    client.on('close', closed);
    upstream.on('close', closed);
    const ws = this.route.config.websocket;
    if (ws.idleTimeoutMs > 0) {
      // Socket timeouts count reads and writes: bytes either way keep the client socket busy.
      client.setTimeout(ws.idleTimeoutMs, () => void this.close(GOING_AWAY));
    }
    if (ws.maxLifetimeMs > 0) this.lifetime = setTimeout(() => void this.close(GOING_AWAY), ws.maxLifetimeMs);
    client.resume();
    upstream.resume();
  }

  /**
   * Closes the WebSocket from the middle: a close frame with `code` to both peers (each at its
   * direction's next frame boundary); the peers then close (the upstream, as the server, ends its
   * connection, and the client's follows), or the sockets are destroyed after CLOSE_GRACE_MS.
   */
  close(code: number): Promise<void> {
    if (this.closing !== null) return this.closing;
    const client = this.client;
    const upstream = this.upstreamSocket;
    if (upstream === null) {
      client.destroy();
      return (this.closing = this.closed);
    }
    this.toClient!.close(closeFrame(code, false));
    this.toUpstream!.close(closeFrame(code, true));
    const grace = setTimeout(() => {
      client.destroy();
      upstream.destroy();
    }, CLOSE_GRACE_MS);
    this.closing = this.closed.then(() => clearTimeout(grace));
    return this.closing;
  }
}

/**
 * WebSocket upgrades. Node hands requests with Connection: upgrade to the server's 'upgrade' event,
 * apart from the HTTP path: the relay and the chain's hot path know nothing of WebSockets. An
 * upgrade is routed like any request, runs its route's steps (IP rules, CORS, auth, rate limit,
 * policies, user plugins) with a ServerResponse on the raw socket for the steps that answer, and
 * is then relayed to a target of the route's upstream, its 101 and then its frames untouched.
 */
export class WebSockets {
  private readonly tunnels = new Set<Tunnel>();
  /** Open and connecting WebSockets by route name (names survive reloads; compiled routes do not). */
  private readonly perRoute = new Map<string, number>();
  private closing = false;
  private readonly connections: GaugeFamily;
  private readonly upgrades: CounterFamily;
  private readonly bytes: CounterFamily;
  private readonly messages: CounterFamily;

  constructor(private readonly deps: WebSocketDeps) {
    const m = deps.metrics;
    this.connections = m.gauge('gateway_websocket_connections', 'Open WebSockets, by route.', ['route']);
    this.upgrades = m.counter(
      'gateway_websocket_upgrades_total',
      'WebSocket upgrades by route and result: upgraded; refused (the chain or the gateway answered: auth, rate limit, CORS, routing, shutting down); not_allowed (websocket.enabled is off); limited (websocket.maxConnections); unavailable (no target takes traffic); upstream_refused (the upstream answered without 101); upstream_failed (connect error or timeout); client_closed (the client left during the handshake).',
      ['route', 'result'],
    );
    this.bytes = m.counter(
      'gateway_websocket_bytes_total',
      'Bytes relayed over WebSockets (frames as they are on the wire, headers included), by route and direction (to_upstream, to_client).',
      ['route', 'direction'],
    );
    this.messages = m.counter(
      'gateway_websocket_messages_total',
      'WebSocket messages relayed (data messages, counted at their last frame; control frames are not), by route and direction (to_upstream, to_client).',
      ['route', 'direction'],
    );
  }

  /** Takes the upgrades of `server` (call it for every listener). */
  attach(server: Server): void {
    server.on('upgrade', (req: IncomingMessage, socket: Duplex, head: Buffer) => this.upgrade(server, req, socket as Socket, head));
  }

  /**
   * Closes every WebSocket with `code` (a close frame to both peers) and refuses new upgrades;
   * resolves once all sockets are closed, which takes at most CLOSE_GRACE_MS.
   */
  async closeAll(code = GOING_AWAY): Promise<void> {
    this.closing = true;
    await Promise.all([...this.tunnels].map((t) => t.close(code)));
  }

  /** @internal A tunnel gave its slot back. */
  leave(t: Tunnel): void {
    this.tunnels.delete(t);
    const n = (this.perRoute.get(t.route.name) ?? 1) - 1;
    if (n === 0) this.perRoute.delete(t.route.name);
    else this.perRoute.set(t.route.name, n);
  }

  private upgrade(server: Server, req: IncomingMessage, socket: Socket, head: Buffer): void {
    socket.on('error', noop);
    // The socket is no longer the HTTP server's: its idle handling is the tunnel's from here on.
    socket.removeAllListeners('timeout');
    socket.setTimeout(0);
    const res = new ServerResponse(req);
    res.assignSocket(socket);
    res.shouldKeepAlive = false;
    res.on('finish', () => socket.destroySoon());
    if (!asksWebSocket(req.headers.upgrade) || req.method !== 'GET') return this.plain(server, req, res, head);

    const ctx = new RequestContext(req, res, this.deps.requestId(req.headers['x-request-id']), this.deps.log, performance.now());
    const u = new Upgrade(ctx, head);
    // Every answer but a 101 goes out through `res`: the gateway's refusals, the steps' own
    // (401, 403, 429, ...), the upstream's non-101 answer.
    res.on('finish', () => this.record(u, res.statusCode));
    if (this.closing) return this.refuse(u, new GatewayError('SHUTTING_DOWN'));
    if (!speaksHttp1(req)) return this.refuse(u, versionError(req));
    let url = req.url ?? '/';
    if (url.charCodeAt(0) !== 47 /* / */) url = takeAbsoluteForm(req) ?? url;
    const q = url.indexOf('?');
    const path = normalizePath(q < 0 ? url : url.slice(0, q));
    if (path === null) return this.refuse(u, new GatewayError('BAD_PATH'));
    ctx.path = path;
    ctx.query = q < 0 ? '' : url.slice(q);

    const runtime = this.deps.runtime();
    const m = runtime.router.match(path, runtime.router.usesHosts ? hostName(req.headers.host) : '', 'GET');
    if (m.kind !== 'not-found') ctx.route = m.route;
    const repeated = runtime.singleHeaders.check(req.rawHeaders, req.httpVersionMinor === 1);
    if (repeated !== null) return this.refuse(u, repeated);
    if (m.kind === 'not-found') return this.refuse(u, new GatewayError('ROUTE_NOT_FOUND'));
    if (m.kind === 'method-not-allowed') return this.refuse(u, new GatewayError('METHOD_NOT_ALLOWED', { headers: { allow: m.allow } }));
    const route = m.route;
    if (!route.allowsPathParameters && hasPathParameters(path)) return this.refuse(u, new GatewayError('BAD_PATH'));
    if (!route.config.websocket.enabled) return this.refuse(u, new GatewayError('WEBSOCKET_NOT_ALLOWED'), 'not_allowed');

    const limit = route.config.websocket.maxConnections;
    const count = this.perRoute.get(route.name) ?? 0;
    if (limit > 0 && count >= limit) {
      return this.refuse(
        u,
        new GatewayError('WEBSOCKET_LIMIT', { detail: `The route allows ${limit} open WebSockets`, headers: { 'retry-after': LIMIT_RETRY_AFTER_S } }),
        'limited',
      );
    }
    // The slot is taken now, before the (possibly async) steps, so concurrent upgrades cannot overshoot.
    this.perRoute.set(route.name, count + 1);
    const tunnel = new Tunnel(this, route, socket);
    this.tunnels.add(tunnel);
    u.tunnel = tunnel;
    socket.on('close', () => {
      if (tunnel.upstreamSocket === null) tunnel.release();
    });

    const { clientIp } = runtime;
    const peer = socket.remoteAddress ?? '';
    ctx.peer = peer;
    ctx.peerTrusted = clientIp.isTrusted(peer);
    ctx.clientIp = ctx.peerTrusted ? clientIp.resolve(peer, req.headers['x-forwarded-for']) : peer;
    runSteps(ctx, 0, { passed: () => this.connect(u), failed: (_ctx, err) => this.refuse(u, err) });
  }

  /**
   * An Upgrade to another protocol than WebSocket (h2c from `curl --http2`, ...) is ignored, as RFC
   * 9110 §7.8 lets a server do: the request goes through the HTTP path as if it had not asked (the
   * relay never forwards Upgrade). Node has already stopped parsing the connection, so the request
   * must be complete in its head: one with a body is refused instead.
   */
  private plain(server: Server, req: IncomingMessage, res: ServerResponse, head: Buffer): void {
    if (announcesBody(req) || head.length > 0 || req.method === 'CONNECT') {
      const ctx = new RequestContext(req, res, this.deps.requestId(req.headers['x-request-id']), this.deps.log, performance.now());
      const u = new Upgrade(ctx, head);
      res.on('finish', () => this.record(u, res.statusCode));
      const detail = `The request asks to upgrade to "${req.headers.upgrade ?? ''}" and carries a body; the gateway only upgrades to websocket (with GET). Send it without Upgrade.`;
      return this.refuse(u, new GatewayError('BAD_REQUEST', { detail }));
    }
    (req as IncomingMessage & { upgrade: boolean }).upgrade = false;
    req.complete = true;
    req.push(null);
    server.emit('request', req, res);
  }

  /** The steps let the upgrade through: connect to a target and ask it to upgrade. */
  private connect(u: Upgrade): void {
    const { ctx } = u;
    const tunnel = u.tunnel!;
    const socket = tunnel.client;
    if (socket.destroyed) return this.clientClosed(u);
    const route = ctx.route;
    const req = ctx.req;
    // Browsers do not apply CORS to WebSockets: the origin check the CORS step leaves to the
    // browser is made here (cross-site WebSocket hijacking). The step allowed the origin if it said so.
    if (route.answersPreflight && req.headers.origin !== undefined && !hasHeader(ctx.responseHeaders, 'access-control-allow-origin')) {
      return this.refuse(u, new GatewayError('FORBIDDEN', { detail: 'The origin is not allowed by the CORS policy of this route' }));
    }
    const upstream = route.upstream;
    const ticket = { probe: false, ctx };
    const now = performance.now();
    const target = upstream.pick(now, null, ticket);
    if (target === null) {
      upstream.events.rejected(upstream.name, 'unavailable');
      return this.refuse(u, new GatewayError('UPSTREAM_UNAVAILABLE', { headers: { 'retry-after': upstream.retryAfterSeconds(now) } }), 'unavailable');
    }
    ctx.upstreamStartedAt = now;

    const facts: ClientHeaderFacts = { host: undefined, xForwardedFor: undefined, xForwardedProto: undefined, xForwardedHost: undefined, forwarded: undefined, hasBody: false };
    const headers: string[] = [];
    copyRequestHeaders(req.rawHeaders, route.dropRequestHeaders, headers, facts);
    const trusted = ctx.peerTrusted;
    headers.push(
      'connection',
      'Upgrade',
      'upgrade',
      'websocket',
      'x-forwarded-for',
      trusted && facts.xForwardedFor ? `${facts.xForwardedFor}, ${ctx.peer}` : ctx.peer,
      'x-forwarded-proto',
      (trusted && facts.xForwardedProto) || ((socket as { encrypted?: boolean }).encrypted ? 'https' : 'http'),
      'x-forwarded-host',
      (trusted && facts.xForwardedHost) || facts.host || '',
      'x-request-id',
      ctx.id,
    );
    if (trusted && facts.forwarded) headers.push('forwarded', facts.forwarded);
    if (ctx.upstreamHeaders !== null) for (const h of ctx.upstreamHeaders) headers.push(h);
    this.attempt(u, target, ticket, headers, route.config.preserveHost ? (facts.host ?? null) : null, [target]);
  }

  /**
   * Asks `target` to upgrade. A target that cannot be connected to has seen nothing of the
   * request, so the next target that takes traffic is tried, each target once at most.
   */
  private attempt(u: Upgrade, target: Target, ticket: { probe: boolean }, headers: readonly string[], host: string | null, tried: Target[]): void {
    const { ctx } = u;
    const route = ctx.route;
    const upstream = route.upstream;
    const socket = u.tunnel!.client;
    ctx.target = target;
    const origin = new URL(target.origin);
    const tls = origin.protocol === 'https:';
    const tlsOptions = target.connectOptions as { rejectUnauthorized?: boolean; ca?: Buffer; servername?: string };
    const options = {
      host: origin.hostname.replace(/^\[|\]$/g, ''),
      port: origin.port || (tls ? 443 : 80),
      method: 'GET',
      path: target.basePath + route.rewrite(ctx.path) + ctx.query,
      headers: ['host', host ?? origin.host, ...headers],
      agent: false,
    };
    // A sampled upgrade: the attempt is a client span, whose context the upstream gets.
    const trace = ctx.trace;
    if (trace !== null) trace.attemptStarted(target, options.headers);
    const upReq: ClientRequest = tls
      ? httpsRequest({ ...options, rejectUnauthorized: tlsOptions.rejectUnauthorized, ca: tlsOptions.ca, servername: tlsOptions.servername })
      : httpRequest(options);

    let settled = false;
    let connected = false;
    const settle = (): boolean => {
      if (settled) return false;
      settled = true;
      clearTimeout(timer);
      socket.off('close', clientLeft);
      ctx.upstreamMs = performance.now() - ctx.upstreamStartedAt;
      return true;
    };
    const fail = (code: ErrorCode, err: unknown): void => {
      if (!settle()) return;
      trace?.attemptEnded(0, err as Error);
      upReq.destroy();
      const now = performance.now();
      target.state.record(errorKind(code), ticket.probe, now);
      ctx.log.warn({ err: { message: (err as Error).message, code: (err as { code?: string }).code }, target: target.origin }, 'websocket upstream failed');
      if (!connected && (code === 'UPSTREAM_CONNECT_FAILED' || code === 'UPSTREAM_CONNECT_TIMEOUT')) {
        const nextTicket = { probe: false, ctx };
        const next = upstream.pick(now, target, nextTicket);
        if (next !== null && !tried.includes(next)) {
          tried.push(next);
          upstream.events.retried(upstream.name, 'connect');
          return this.attempt(u, next, nextTicket, headers, host, tried);
        }
        if (next !== null) next.state.release(nextTicket.probe);
      }
      this.refuse(u, new GatewayError(code), 'upstream_failed');
    };
    const clientLeft = (): void => {
      if (!settle()) return;
      trace?.attemptEnded(0, undefined);
      upReq.destroy();
      target.state.release(ticket.probe);
      this.clientClosed(u);
    };
    socket.once('close', clientLeft);
    const connectMs = upstream.config.timeouts.connectMs;
    let timer = setTimeout(() => fail('UPSTREAM_CONNECT_TIMEOUT', new Error(`no connection within ${connectMs} ms`)), connectMs);
    upReq.on('socket', (s: Socket) => {
      s.once('connect', () => {
        if (settled) return;
        connected = true;
        clearTimeout(timer);
        const ms = route.config.websocket.handshakeTimeoutMs;
        timer = setTimeout(() => fail('UPSTREAM_TIMEOUT', new Error(`no answer to the upgrade within ${ms} ms`)), ms);
      });
    });
    upReq.on('error', (err) => fail(upstreamErrorCode(err), err));
    upReq.on('response', (upRes) => {
      if (!settle()) return upRes.destroy();
      trace?.attemptEnded(upRes.statusCode ?? 0, undefined);
      target.state.record(statusKind(upRes.statusCode ?? 502), ticket.probe, performance.now());
      this.relayRefusal(u, upRes);
    });
    upReq.on('upgrade', (upRes: IncomingMessage, upSocket: Socket, upHead: Buffer) => {
      if (!settle()) return upSocket.destroy();
      trace?.attemptEnded(101, undefined);
      target.state.record(0, ticket.probe, performance.now());
      this.established(u, target, upRes, upSocket, upHead);
    });
    upReq.end();
  }

  /** The upstream answered 101: relay its head, then join the sockets. */
  private established(u: Upgrade, target: Target, upRes: IncomingMessage, upSocket: Socket, upHead: Buffer): void {
    const { ctx, head } = u;
    const tunnel = u.tunnel!;
    const client = tunnel.client;
    ctx.res.detachSocket(client);
    let out = 'HTTP/1.1 101 Switching Protocols\r\n';
    const raw = upRes.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) if (raw[i].toLowerCase() !== 'x-request-id') out += `${raw[i]}: ${raw[i + 1]}\r\n`;
    out += `x-request-id: ${ctx.id}\r\n`;
    const extra = ctx.responseHeaders;
    if (extra !== null) for (let i = 0; i < extra.length; i += 2) out += `${extra[i]}: ${extra[i + 1]}\r\n`;
    client.write(out + '\r\n');
    const route = ctx.route.name;
    const cells: TunnelCells = {
      open: this.connections.child(route),
      toUpstream: this.bytes.child(route, 'to_upstream'),
      toClient: this.bytes.child(route, 'to_client'),
      messagesToUpstream: this.messages.child(route, 'to_upstream'),
      messagesToClient: this.messages.child(route, 'to_client'),
    };
    u.result = 'upgraded';
    this.record(u, 101);
    ctx.log.debug({ target: target.origin }, 'websocket open');
    tunnel.open(upSocket, cells, head, upHead);
  }

  /** The upstream answered the upgrade with a plain response (200, 403, ...): the client gets it as it is. */
  private relayRefusal(u: Upgrade, upRes: IncomingMessage): void {
    const { ctx } = u;
    u.result = 'upstream_refused';
    const headers: string[] = [];
    const raw = upRes.rawHeaders;
    for (let i = 0; i < raw.length; i += 2) {
      const name = raw[i].toLowerCase();
      if (!HOP_BY_HOP.has(name) && name !== 'x-request-id') headers.push(raw[i], raw[i + 1]);
    }
    headers.push('x-request-id', ctx.id);
    if (ctx.responseHeaders !== null) for (const h of ctx.responseHeaders) headers.push(h);
    const res = ctx.res;
    try {
      res.writeHead(upRes.statusCode ?? 502, headers);
    } catch {
      upRes.destroy();
      return sendProblem(res, ctx.id, 'UPSTREAM_BAD_RESPONSE');
    }
    upRes.on('error', () => res.destroy());
    upRes.pipe(res);
  }

  /** Answers an upgrade the gateway will not carry, on the raw socket. */
  private refuse(u: Upgrade, err: unknown, result: UpgradeResult = 'refused'): void {
    const { ctx } = u;
    const res = ctx.res;
    u.result = result;
    if (err instanceof GatewayError) {
      ctx.errorCode = err.code;
      sendProblem(res, ctx.id, err.code, { detail: err.message, headers: err.headers, extra: ctx.responseHeaders });
      return;
    }
    ctx.errorCode = 'INTERNAL';
    ctx.log.error({ err }, 'websocket upgrade failed');
    sendProblem(res, ctx.id, 'INTERNAL');
  }

  private clientClosed(u: Upgrade): void {
    u.result = 'client_closed';
    this.record(u, 499);
  }

  /** Counts the upgrade's answer once: upgrade metrics, the route's request metrics, the access log. */
  private record(u: Upgrade, status: number): void {
    if (u.recorded) return;
    u.recorded = true;
    const { ctx } = u;
    const route = ctx.route as CompiledRoute | undefined;
    const ms = performance.now() - ctx.startedAt;
    this.upgrades.child(route?.name ?? '_unrouted', u.result).inc();
    if (ctx.trace !== null) ctx.trace.finish(status);
    if (route !== undefined) route.metrics.record(ctx, 'GET', status, ms);
    this.deps.accessLog?.write(ctx, 'GET', status, ms, false);
  }
}

function hasHeader(list: readonly string[] | null, name: string): boolean {
  if (list === null) return false;
  for (let i = 0; i < list.length; i += 2) if (list[i] === name) return true;
  return false;
}

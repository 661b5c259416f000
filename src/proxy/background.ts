import { ServerResponse, type IncomingMessage } from 'node:http';
import { performance } from 'node:perf_hooks';
import { runSteps, type Step, type StepsOutcome } from '../chain';
import { RequestContext } from '../context';
import type { Resource } from '../plugins/types';
import { relay } from './relay';

/**
 * The "client" of a background request. The relay writes to it as to any client (so target
 * selection, retries, breakers, timeouts and the route's response transform are those of every
 * request); the bytes go nowhere and nothing ever waits on a drain.
 */
class Discard extends ServerResponse {
  private gone = false;

  override write(): boolean {
    return true;
  }

  override end(): this {
    // As with a real response, 'close' comes after end() has returned (the relay may end the
    // response with the body's last chunk before it reports the exchange complete).
    process.nextTick(() => this.closeOnce());
    return this;
  }

  override destroy(): this {
    this.closeOnce();
    return this;
  }

  private closeOnce(): void {
    if (this.gone) return;
    this.gone = true;
    this.emit('close');
  }
}

/**
 * Requests the gateway makes on its own behalf, from a client request that was already answered
 * (the cache's stale-while-revalidate refresh). Gateway-lifetime: close() cancels those still
 * running, so no timer or upstream socket outlives the gateway.
 */
export class BackgroundRelays implements Resource {
  readonly name = 'background-relays';
  private readonly active = new Set<RequestContext>();
  private closed = false;
  private readonly outcome: StepsOutcome = {
    passed: (ctx) => (this.closed ? void ctx.res.destroy() : relay(ctx)),
    failed: (ctx, err) => this.drop(ctx, err),
  };

  /**
   * A GET for the resource of `client`, without the client's validators (the caller sets its own)
   * and without its response: set `observer` on it, then `run` it. null once closing.
   */
  context(client: RequestContext): RequestContext | null {
    if (this.closed) return null;
    const raw = client.req.rawHeaders;
    const rawHeaders: string[] = [];
    for (let i = 0; i < raw.length; i += 2) {
      const lower = raw[i].toLowerCase();
      if (lower !== 'if-none-match' && lower !== 'if-modified-since') rawHeaders.push(raw[i], raw[i + 1]);
    }
    // The client's request as the relay reads it (socket, headers for steps), seen as a plain GET.
    const req = Object.create(client.req, { method: { value: 'GET' }, rawHeaders: { value: rawHeaders } }) as IncomingMessage;
    const ctx = new RequestContext(req, new Discard(req), `${client.id}-bg`, client.baseLog, performance.now());
    ctx.route = client.route;
    ctx.path = client.path;
    ctx.query = client.query;
    ctx.clientIp = client.clientIp;
    ctx.peer = client.peer;
    ctx.peerTrusted = client.peerTrusted;
    ctx.identity = client.identity;
    ctx.upstreamHeaders = client.upstreamHeaders === null ? null : client.upstreamHeaders.slice();
    return ctx;
  }

  /** Runs the route's steps that come after `after` (request header rules, ...), then relays. */
  run(ctx: RequestContext, after: Step): void {
    this.active.add(ctx);
    ctx.res.once('close', () => this.active.delete(ctx));
    // A step that answers (to nobody) leaves nothing to fetch.
    runSteps(ctx, ctx.route.steps.indexOf(after) + 1, this.outcome);
  }

  private drop(ctx: RequestContext, err: unknown): void {
    ctx.log.warn({ err }, 'background request failed before the relay');
    ctx.res.destroy();
  }

  async close(): Promise<void> {
    this.closed = true;
    for (const ctx of this.active) {
      ctx.exchange?.abandon();
      ctx.res.destroy();
    }
    this.active.clear();
  }
}

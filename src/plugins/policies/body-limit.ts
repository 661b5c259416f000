import { Transform, type TransformCallback } from 'node:stream';
import type { Step } from '../../chain';
import type { RequestContext } from '../../context';
import { GatewayError } from '../../errors';
import type { CompiledRoute } from '../../routes';
import type { Plugin, PluginContext } from '../types';

function tooLarge(ctx: RequestContext, limit: number): GatewayError {
  // The rest of the body is never read: the connection cannot carry another request.
  ctx.res.shouldKeepAlive = false;
  return new GatewayError('PAYLOAD_TOO_LARGE', { detail: `The request body exceeds the limit of ${limit} bytes` });
}

/**
 * Counts a chunked body on its way to the upstream. Crossing the limit errors the stream, which
 * makes undici abort the upstream request (the upstream sees a cut body, never a complete one) and
 * hand the error to the relay, which answers 413.
 */
class ByteLimit extends Transform {
  private seen = 0;

  constructor(
    private readonly ctx: RequestContext,
    private readonly limit: number,
  ) {
    super();
  }

  override _transform(chunk: Buffer, _enc: BufferEncoding, done: TransformCallback): void {
    this.seen += chunk.length;
    if (this.seen > this.limit) done(tooLarge(this.ctx, this.limit));
    else done(null, chunk);
  }
}

/**
 * A declared Content-Length over the limit is refused before the upstream is contacted. A body
 * with a Content-Length within the limit cannot grow past it (Node's parser enforces the length),
 * so only chunked bodies are counted, and only they pay for the extra stream.
 */
class BodyLimitStep implements Step {
  readonly name = 'body-limit';
  constructor(private readonly limit: number) {}

  run(ctx: RequestContext): boolean {
    const req = ctx.req;
    const length = req.headers['content-length'];
    if (length !== undefined) {
      if (Number(length) > this.limit) throw tooLarge(ctx, this.limit);
      return true;
    }
    if (req.headers['transfer-encoding'] === undefined) return true;
    const counter = new ByteLimit(ctx, this.limit);
    // An earlier step may have read the body already (the external authorizer) and put it back in ctx.body.
    (ctx.body ?? req).pipe(counter);
    ctx.body = counter;
    return true;
  }
}

/** Request body limit: the route's own, or the global one. Runs last, right before the relay. */
export function bodyLimitPlugin(ctx: PluginContext): Plugin {
  const global = ctx.config.policies.limits.maxBodyBytes;
  return {
    name: 'body-limit',
    stepFor(route: CompiledRoute): Step | null {
      const limit = route.config.policies.limits.maxBodyBytes ?? global;
      return limit === undefined ? null : new BodyLimitStep(limit);
    },
  };
}

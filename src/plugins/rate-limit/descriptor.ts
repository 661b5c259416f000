import { runtimeCache, sharedStore, usesStore } from '../cache/descriptor';
import type { PluginDescriptor } from '../types';
import { checkRateLimitConfig } from './check';
import { rateLimitFields } from './fields';
import { RateLimitPlugin } from './plugin';

/** Token-bucket rate limits, once the consumer is known; the route's cache lookup rides in the same store call. */
export const rateLimitPlugin: PluginDescriptor<typeof rateLimitFields.top, typeof rateLimitFields.route> = {
  name: 'rate-limit',
  schema: rateLimitFields,
  check: checkRateLimitConfig,
  create: (ctx) => {
    if (!usesStore(ctx)) return {};
    return { admit: [new RateLimitPlugin(ctx, sharedStore(ctx), runtimeCache(ctx))] };
  },
};

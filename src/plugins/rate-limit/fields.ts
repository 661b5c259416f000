import { Type } from '@sinclair/typebox';
import { RouteRateLimitSchema } from './schema';

/** The configuration fields of the rate-limit plugin: `rateLimit` in a route (consumers' own limits are in `consumers`). */
export const rateLimitFields = { top: {}, route: { rateLimit: Type.Optional(RouteRateLimitSchema) } };

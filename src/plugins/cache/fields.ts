import { Type } from '@sinclair/typebox';
import { RouteCacheSchema } from './schema';

/** The configuration fields of the cache plugin: `cache` in a route. */
export const cacheFields = { top: {}, route: { cache: Type.Optional(RouteCacheSchema) } };

import { authFields } from './auth/fields';
import { cacheFields } from './cache/fields';
import { httpsFields } from './https/fields';
import { policiesFields } from './policies/fields';
import { rateLimitFields } from './rate-limit/fields';
import { tracingFields } from './tracing/fields';
import { userFields } from './user/schema';

/**
 * The configuration fields of the plugins in PLUGINS (./index.ts), in the same order: each is its
 * plugin's `schema`. config/schema.ts assembles the configuration schema from this list; it holds
 * schemas only, so the config types never depend on plugin code (which depends on them).
 */
export const PLUGIN_FIELDS = [tracingFields, httpsFields, policiesFields, authFields, cacheFields, rateLimitFields, userFields] as const;

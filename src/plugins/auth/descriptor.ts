import type { PluginDescriptor } from '../types';
import { authWarnings, checkAuthConfig } from './check';
import { authFields } from './fields';
import { createAuthPlugin } from '.';

/** Authentication: every route loses client-sent identity headers; routes with `auth` verify the caller. */
export const authPlugin: PluginDescriptor<typeof authFields.top, typeof authFields.route> = {
  name: 'auth',
  schema: authFields,
  check: checkAuthConfig,
  warnings: authWarnings,
  create: (ctx) => ({ authenticate: [createAuthPlugin(ctx)] }),
};

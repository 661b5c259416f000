import { Type } from '@sinclair/typebox';
import { ConsumerSchema } from './consumers-schema';
import { AuthSchema, RouteAuthSchema } from './schema';

/** The configuration fields of the auth plugin: providers and consumers at the top level, `auth` in a route. */
export const authFields = {
  top: {
    auth: AuthSchema,
    consumers: Type.Array(ConsumerSchema, { description: 'API consumers known to the gateway.', default: [] }),
  },
  route: { auth: Type.Optional(RouteAuthSchema) },
};

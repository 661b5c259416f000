import { Type, type Static } from '@sinclair/typebox';
import { ConsumerLimitSchema } from '../rate-limit/schema';

export const ConsumerSchema = Type.Object(
  {
    id: Type.String({ description: 'Stable consumer id; sent upstream as the consumer identity.', pattern: '^[A-Za-z0-9_.@:-]{1,128}$' }),
    roles: Type.Array(Type.String({ description: 'A role name.' }), { description: 'Roles granted to the consumer.', default: [] }),
    scopes: Type.Array(Type.String({ description: 'A scope name.' }), { description: 'Scopes granted to the consumer.', default: [] }),
    routes: Type.Optional(
      Type.Array(Type.String({ description: 'A route name.' }), {
        description: 'Routes this consumer may use. All routes when omitted.',
      }),
    ),
    rateLimits: Type.Array(ConsumerLimitSchema, {
      description: "The consumer's own limits, applied on every route that rate-limits (keys default to the consumer).",
      default: [],
    }),
  },
  { additionalProperties: false, description: 'An API consumer: a caller the gateway knows by id.' },
);

export type ConsumerConfig = Static<typeof ConsumerSchema>;

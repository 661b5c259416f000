import { Type, type Static } from '@sinclair/typebox';
import { ConsumerLimitSchema } from '../rate-limit/schema';

export const StoredKeySchema = Type.Object(
  {
    prefix: Type.String({
      description: 'The visible start of the key, for support and revocation; ik_ and 40 bits of the hash for a key imported from another gateway (`gateway import`).',
      pattern: '^(gk|ik)_[a-z2-7]{8}$',
      expected: 'a key prefix like gk_abcdefgh (ik_abcdefgh for an imported key)',
    }),
    sha256: Type.String({ description: 'SHA-256 of the whole key, hex. The key itself is never stored.', pattern: '^[0-9a-f]{64}$', expected: '64 lower-case hex digits' }),
    created: Type.Optional(Type.String({ description: 'When the key was created (ISO 8601).' })),
    expires: Type.Optional(Type.String({ description: 'When the key stops working (ISO 8601). Never when omitted.' })),
  },
  { additionalProperties: false, description: 'A hashed API key, as printed by `gateway keys create`.' },
);

export const ConsumerSchema = Type.Object(
  {
    id: Type.String({ description: 'Stable consumer id; sent upstream as the consumer identity.', pattern: '^[A-Za-z0-9_.@:-]{1,128}$', expected: 'an id of 1 to 128 letters, digits and _ . @ : -' }),
    roles: Type.Array(Type.String({ description: 'A role name.' }), { description: 'Roles granted to the consumer.', default: [] }),
    scopes: Type.Array(Type.String({ description: 'A scope name.' }), { description: 'Scopes granted to the consumer.', default: [] }),
    routes: Type.Optional(
      Type.Array(Type.String({ description: 'A route name.' }), {
        description: 'Routes this consumer may use. All routes when omitted.',
      }),
    ),
    apiKeys: Type.Array(StoredKeySchema, {
      description: 'API keys of this consumer for the memory key store (several at once allow rotation with overlap).',
      default: [],
    }),
    rateLimits: Type.Array(ConsumerLimitSchema, {
      description: "The consumer's own limits, applied on every route that rate-limits (keys default to the consumer).",
      default: [],
    }),
  },
  { additionalProperties: false, description: 'An API consumer: a caller the gateway knows by id.' },
);

export type ConsumerConfig = Static<typeof ConsumerSchema>;

import { Type, type Static } from '@sinclair/typebox';

/** A duration such as 500ms, 1s, 1m, 1h or 1d. */
export const DURATION_PATTERN = '^[1-9][0-9]*(ms|s|m|h|d)$';

export const LimitSchema = Type.Object(
  {
    rate: Type.Integer({ description: 'Tokens added to the bucket every `per`.', minimum: 1 }),
    per: Type.String({ description: 'Refill period: 500ms, 1s, 1m, 1h or 1d.', pattern: DURATION_PATTERN }),
    burst: Type.Optional(
      Type.Integer({ description: 'Bucket capacity (the largest burst). Defaults to `rate`.', minimum: 1 }),
    ),
    by: Type.String({
      description:
        'What the bucket is keyed by: ip, consumer (falls back to the client IP without an identity), apiKey, header:<name>, or route (one bucket shared by everyone).',
      pattern: '^(ip|consumer|apiKey|route|header:[!#$%&\'*+.^_`|~0-9A-Za-z-]+)$',
      default: 'ip',
    }),
  },
  { additionalProperties: false, description: 'A token bucket: `rate` tokens per `per`, holding at most `burst`.' },
);

export type LimitConfig = Static<typeof LimitSchema>;

import { Type } from '@sinclair/typebox';

const Obj = Type.Object;

/** The Strict-Transport-Security settings, of listen.tls (every route) and of a route's https (config/ and the https plugin share it). */
export const HstsSchema = Obj(
  {
    maxAgeSeconds: Type.Integer({ description: 'max-age: how long browsers remember to use HTTPS only (seconds). 0 tells them to forget.', default: 31536000, minimum: 0 }),
    includeSubDomains: Type.Boolean({ description: 'Apply to every subdomain of the host too.', default: false }),
    preload: Type.Boolean({ description: 'Ask to be put on the browsers\' preload list (needs includeSubDomains and a max-age of at least a year).', default: false }),
  },
  {
    additionalProperties: false,
    description: 'Strict-Transport-Security on responses sent over TLS (never over plain HTTP, per RFC 6797).',
  },
);

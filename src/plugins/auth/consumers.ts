import type { ConsumerConfig } from './consumers-schema';
import type { Identity } from '../../context';
import { identityHeaderPairs, type IdentityHeaderNames } from './identity-headers';

/** A verified caller plus what the route checks need. */
export interface Verified {
  identity: Identity;
  /** Routes the consumer may use, or null for all. */
  routes: ReadonlySet<string> | null;
  /** A JWT's `typ` as a media type (see tokenMediaType), null when it has none; absent for API keys. */
  tokenType?: string | null;
}

export interface KnownConsumer {
  config: ConsumerConfig;
  routes: ReadonlySet<string> | null;
  /** The identity an API key of this consumer proves, built once. */
  apiKey: Verified;
}

/** The consumers of the configuration, by id, with their API-key identities prepared at start-up. */
export class ConsumerDirectory {
  private readonly byId = new Map<string, KnownConsumer>();

  constructor(consumers: readonly ConsumerConfig[], names: IdentityHeaderNames) {
    for (const c of consumers) {
      const routes = c.routes ? new Set(c.routes) : null;
      // Roles were checked with the configuration, so the headers always build.
      const apiKey: Verified = {
        identity: {
          consumerId: c.id,
          roles: c.roles,
          scopes: c.scopes,
          method: 'apiKey',
          headers: identityHeaderPairs(names, c.id, undefined, c.roles, []),
        },
        routes,
      };
      this.byId.set(c.id, { config: c, routes, apiKey });
    }
  }

  get(id: string): KnownConsumer | undefined {
    return this.byId.get(id);
  }
}

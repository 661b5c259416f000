import { hash, randomBytes } from 'node:crypto';
import type { ConsumerDirectory, Verified } from './consumers';
import type { ConsumerConfig } from './consumers-schema';
import { AuthFailure } from './failure';

/**
 * API keys look like gk_<8 base32 chars>_<43 base64url chars>: the first part is the visible
 * prefix (for support and revocation), the rest 256 random bits. Only SHA-256 of the whole key
 * is ever stored; with that much entropy an unsalted hash is safe and allows a direct lookup.
 */
export const KEY_PATTERN = /^gk_[a-z2-7]{8}_[A-Za-z0-9_-]{43}$/;
/** gk_ for keys the gateway made, ik_ for keys imported from another gateway (see importedKey). */
export const PREFIX_PATTERN = /^(gk|ik)_[a-z2-7]{8}$/;
/**
 * An imported key (Kong's key-auth and the like) keeps whatever shape its gateway gave it: any
 * visible ASCII, up to 256 characters (Kong's own bound on generated and supplied keys is far lower).
 */
export const FOREIGN_KEY_PATTERN = /^[\x21-\x7e]{1,256}$/;

const BASE32 = 'abcdefghijklmnopqrstuvwxyz234567';

/** One-shot hashing (Node ≥ 20.12): no Hash object per request for the GC to finalise. */
export function hashKey(key: string): string {
  return hash('sha256', key, 'hex');
}

export interface NewKey {
  key: string;
  prefix: string;
  sha256: string;
}

/** Eight base32 characters from the first 40 bits of these bytes. */
function base32Id(id: Buffer, prefix: string): string {
  let bits = 0;
  let value = 0;
  for (const byte of id.subarray(0, 5)) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      prefix += BASE32[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  return prefix;
}

export function generateKey(): NewKey {
  const prefix = base32Id(randomBytes(5), 'gk_');
  const key = `${prefix}_${randomBytes(32).toString('base64url')}`;
  return { key, prefix, sha256: hashKey(key) };
}

/**
 * An existing key of another gateway, kept as it is so its clients need not change. Its handle is
 * ik_ and 40 bits of the hash: stable across imports, and unlike the first characters of the key
 * (often short and hand-picked in Kong) it tells nothing the stored hash does not.
 */
export function importedKey(key: string): NewKey {
  if (!FOREIGN_KEY_PATTERN.test(key)) throw new Error('an imported key must be 1 to 256 visible ASCII characters');
  const sha256 = hashKey(key);
  return { key, prefix: base32Id(Buffer.from(sha256, 'hex'), 'ik_'), sha256 };
}

/** What the store knows about one key (never the key itself). Times are epoch milliseconds. */
export interface KeyRecord {
  consumer: string;
  prefix: string;
  created: number | null;
  expires: number | null;
}

/** Key lifecycle operations, shared by the admin API and the `gateway keys` command. */
export interface KeyStore {
  readonly kind: 'memory' | 'redis';
  /** The record of a key hash; throws or rejects with AuthFailure(unavailable) when the store cannot answer. */
  lookup(sha256: string): KeyRecord | null | Promise<KeyRecord | null>;
  /** Creates a key; the plain key is in the answer and nowhere else. */
  create(consumer: string, expires: number | null): Promise<{ key: string; record: KeyRecord }>;
  list(consumer: string): Promise<KeyRecord[]>;
  /** Revokes the key with this prefix; false when there is none. */
  revoke(prefix: string): Promise<boolean>;
}

/** The memory store's keys come from the configuration file, so they cannot change at run time. */
export class ReadOnlyStoreError extends Error {
  constructor() {
    super('the memory key store is the configuration file: change keys with `gateway keys create|revoke` and reload, or use store: redis');
    this.name = 'ReadOnlyStoreError';
  }
}

const DURATION = /^([1-9][0-9]*)(m|h|d)$/;
const UNIT_MS: Record<string, number> = { m: 60_000, h: 3_600_000, d: 86_400_000 };

/** An expiry given as an ISO 8601 date or a duration from now (30m, 12h, 90d), in epoch ms. */
export function parseExpiry(input: string, now = Date.now()): number {
  const d = DURATION.exec(input);
  const at = d ? now + Number(d[1]) * UNIT_MS[d[2]] : /^\d{4}-\d{2}-\d{2}/.test(input) ? Date.parse(input) : NaN;
  if (!Number.isFinite(at)) throw new Error(`"${input}" is neither an ISO 8601 date nor a duration such as 30m, 12h or 90d`);
  if (at <= now) throw new Error(`"${input}" is in the past`);
  return at;
}

/** Keys held in consumers[].apiKeys of the configuration. */
export class MemoryKeyStore implements KeyStore {
  readonly kind = 'memory';
  private readonly byHash = new Map<string, KeyRecord>();
  private readonly byConsumer = new Map<string, KeyRecord[]>();

  constructor(consumers: readonly ConsumerConfig[]) {
    for (const c of consumers) {
      const records = c.apiKeys.map((k) => ({
        consumer: c.id,
        prefix: k.prefix,
        created: k.created === undefined ? null : Date.parse(k.created),
        expires: k.expires === undefined ? null : Date.parse(k.expires),
      }));
      c.apiKeys.forEach((k, i) => this.byHash.set(k.sha256, records[i]));
      this.byConsumer.set(c.id, records);
    }
  }

  lookup(sha256: string): KeyRecord | null {
    return this.byHash.get(sha256) ?? null;
  }

  async create(): Promise<never> {
    throw new ReadOnlyStoreError();
  }

  async list(consumer: string): Promise<KeyRecord[]> {
    return this.byConsumer.get(consumer) ?? [];
  }

  async revoke(): Promise<never> {
    throw new ReadOnlyStoreError();
  }
}

const INVALID = 'the API key is not valid';

/** Turns a presented API key into the identity of its consumer. */
export class ApiKeyAuthenticator {
  private readonly accept = (record: KeyRecord | null): Verified => {
    if (record === null) throw new AuthFailure(INVALID);
    if (record.expires !== null && Date.now() >= record.expires) throw new AuthFailure('the API key has expired');
    const verified = this.consumers.get(record.consumer)?.apiKey;
    if (verified === undefined) throw new AuthFailure('the API key belongs to a consumer that is no longer configured');
    return verified;
  };

  constructor(
    private readonly store: KeyStore,
    private readonly consumers: ConsumerDirectory,
    /** auth.apiKeys.importedKeys: keys of other shapes are looked up too. */
    private readonly foreign = false,
  ) {}

  authenticate(key: string): Verified | Promise<Verified> {
    // The shape check turns garbage away before it costs a hash or a store round trip.
    if (!KEY_PATTERN.test(key) && !(this.foreign && FOREIGN_KEY_PATTERN.test(key))) throw new AuthFailure(INVALID);
    const record = this.store.lookup(hashKey(key));
    return record instanceof Promise ? record.then(this.accept) : this.accept(record);
  }
}

import type { FastifyBaseLogger } from 'fastify';
import Redis from 'ioredis';
import type { Resource } from '../types';
import { generateKey, type KeyRecord, type KeyStore } from './api-keys';
import { AuthFailure } from './failure';
import type { ApiKeysConfig } from './schema';
import { TtlCache } from './ttl-cache';

/**
 * API keys in Redis, shared by every replica:
 *
 *   <p>key:<sha256>      JSON record {consumer, prefix, created, expires}, expiring with the key
 *   <p>prefix:<prefix>   sha256 of the key with that prefix (revocation by prefix)
 *   <p>consumer:<id>     set of the consumer's key hashes (listing)
 *   <p>invalidate        pub/sub channel: a key hash whose cached lookups must go
 *
 * Each replica caches lookups for at most cacheMs (< 1 s). A revocation publishes the hash so
 * replicas drop it at once; the cache bound covers a lost message or a subscriber reconnecting.
 * The store's own connection is deliberately small and local (bounded timeouts, no offline queue:
 * a Redis outage answers 503 at once instead of queueing requests).
 */
export class RedisKeyStore implements KeyStore, Resource {
  readonly kind = 'redis';
  readonly name = 'api-key-store';
  private readonly client: Redis;
  private subscriber: Redis | null = null;
  private readonly cache: TtlCache<KeyRecord | null>;
  private readonly inflight = new Map<string, Promise<KeyRecord | null>>();
  /** Bumped on every invalidation, so a lookup that started before one is not cached. */
  private generation = 0;
  private readonly p: string;
  private readonly channel: string;
  private lastError = '';

  constructor(
    private readonly cfg: ApiKeysConfig,
    private readonly log: Pick<FastifyBaseLogger, 'warn'>,
  ) {
    this.p = cfg.redis.keyPrefix;
    this.channel = `${this.p}invalidate`;
    this.cache = new TtlCache(cfg.cacheMaxEntries);
    this.client = this.connection(false);
  }

  private connection(offlineQueue: boolean): Redis {
    const r = this.cfg.redis;
    const client = new Redis(r.url, {
      lazyConnect: true,
      connectTimeout: r.connectTimeoutMs,
      commandTimeout: r.commandTimeoutMs,
      maxRetriesPerRequest: 1,
      enableOfflineQueue: offlineQueue,
      retryStrategy: (attempt) => Math.min(attempt * 100, 2000),
    });
    client.on('error', (err: Error) => {
      // One line per distinct failure, not one per reconnect attempt.
      if (err.message === this.lastError) return;
      this.lastError = err.message;
      this.log.warn({ err: { message: err.message } }, 'API key store: Redis error');
    });
    client.on('ready', () => {
      this.lastError = '';
    });
    return client;
  }

  /** Connects for lookups and subscribes to invalidations. A Redis that is down does not stop start-up. */
  async init(): Promise<void> {
    const sub = this.connection(true);
    this.subscriber = sub;
    let subscribedOnce = false;
    sub.on('message', (_channel: string, sha256: string) => this.invalidate(sha256));
    sub.on('ready', () => {
      // Messages sent while the subscriber was away are lost: forget everything cached.
      if (subscribedOnce) this.invalidate(null);
      subscribedOnce = true;
    });
    sub.subscribe(this.channel).catch(() => undefined);
    await Promise.all([this.connect(this.client), this.connect(sub)]);
  }

  /** Connects the command connection only (the `gateway keys` command needs no subscription). */
  open(): Promise<void> {
    return this.client.connect();
  }

  private async connect(client: Redis): Promise<void> {
    try {
      await client.connect();
    } catch {
      // Logged by the error handler; ioredis keeps reconnecting in the background.
    }
  }

  async close(): Promise<void> {
    this.client.disconnect();
    this.subscriber?.disconnect();
  }

  private invalidate(sha256: string | null): void {
    this.generation++;
    if (sha256 === null) {
      this.cache.clear();
      this.inflight.clear();
    } else {
      this.cache.delete(sha256);
      this.inflight.delete(sha256);
    }
  }

  lookup(sha256: string): KeyRecord | null | Promise<KeyRecord | null> {
    const cached = this.cache.get(sha256, Date.now());
    if (cached !== undefined) return cached;
    let pending = this.inflight.get(sha256);
    if (pending !== undefined) return pending;
    const generation = this.generation;
    pending = this.client.get(`${this.p}key:${sha256}`).then(
      (raw) => {
        if (this.inflight.get(sha256) === pending) this.inflight.delete(sha256);
        const record = parseRecord(raw);
        if (generation === this.generation) this.cache.set(sha256, record, Date.now() + this.cfg.cacheMs);
        return record;
      },
      () => {
        if (this.inflight.get(sha256) === pending) this.inflight.delete(sha256);
        throw new AuthFailure('the API key store is unavailable', true);
      },
    );
    this.inflight.set(sha256, pending);
    return pending;
  }

  async create(consumer: string, expires: number | null): Promise<{ key: string; record: KeyRecord }> {
    const record: KeyRecord = { consumer, prefix: '', created: Date.now(), expires };
    for (let attempt = 0; attempt < 5; attempt++) {
      const k = generateKey();
      const prefixKey = `${this.p}prefix:${k.prefix}`;
      // The prefix is the public handle of the key: claim it first so two keys never share one.
      const claimed = expires === null ? await this.client.set(prefixKey, k.sha256, 'NX') : await this.client.set(prefixKey, k.sha256, 'PXAT', expires, 'NX');
      if (claimed === null) continue;
      record.prefix = k.prefix;
      const value = JSON.stringify(record);
      const tx = this.client.multi();
      if (expires === null) tx.set(`${this.p}key:${k.sha256}`, value);
      else tx.set(`${this.p}key:${k.sha256}`, value, 'PXAT', expires);
      tx.sadd(`${this.p}consumer:${consumer}`, k.sha256);
      // A replica may have cached "no such key" for this hash; tell it to look again.
      tx.publish(this.channel, k.sha256);
      await tx.exec();
      return { key: k.key, record };
    }
    throw new Error('could not find a free key prefix');
  }

  async list(consumer: string): Promise<KeyRecord[]> {
    const setKey = `${this.p}consumer:${consumer}`;
    const hashes = await this.client.smembers(setKey);
    if (hashes.length === 0) return [];
    const raws = await this.client.mget(hashes.map((h) => `${this.p}key:${h}`));
    const out: KeyRecord[] = [];
    const gone: string[] = [];
    raws.forEach((raw, i) => {
      const r = parseRecord(raw);
      if (r) out.push(r);
      else gone.push(hashes[i]);
    });
    // Keys that expired in Redis leave their hash behind in the set.
    if (gone.length) await this.client.srem(setKey, ...gone);
    return out.sort((a, b) => (a.created ?? 0) - (b.created ?? 0));
  }

  async revoke(prefix: string): Promise<boolean> {
    const prefixKey = `${this.p}prefix:${prefix}`;
    const sha256 = await this.client.get(prefixKey);
    if (sha256 === null) return false;
    const record = parseRecord(await this.client.get(`${this.p}key:${sha256}`));
    const tx = this.client.multi().del(`${this.p}key:${sha256}`, prefixKey);
    if (record) tx.srem(`${this.p}consumer:${record.consumer}`, sha256);
    tx.publish(this.channel, sha256);
    await tx.exec();
    this.invalidate(sha256);
    return true;
  }
}

function parseRecord(raw: string | null): KeyRecord | null {
  if (raw === null) return null;
  try {
    const r = JSON.parse(raw) as Partial<KeyRecord>;
    if (typeof r.consumer !== 'string' || typeof r.prefix !== 'string') return null;
    return {
      consumer: r.consumer,
      prefix: r.prefix,
      created: typeof r.created === 'number' ? r.created : null,
      expires: typeof r.expires === 'number' ? r.expires : null,
    };
  } catch {
    return null;
  }
}

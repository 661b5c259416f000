import { Type, type Static } from '@sinclair/typebox';

const HOST_PORT = '^[^\\s:]+:[0-9]{1,5}$|^\\[[0-9A-Fa-f:.]+\\]:[0-9]{1,5}$';
const HOST_PORT_WORDS = 'host:port, such as redis-1:6379 or [::1]:6379';

export const MemoryStoreSchema = Type.Object(
  {
    maxKeys: Type.Integer({
      description:
        'Most buckets kept; past it the least recently used bucket is dropped (it restarts full), so a flood of distinct keys cannot exhaust memory.',
      default: 100000,
      minimum: 1,
    }),
    cacheMaxBytes: Type.Integer({
      description: 'Most bytes of cached responses (bodies and headers) kept; past it entries are evicted oldest first, each entry read since it was last passed over getting a second chance (an approximation of least recently used that costs a hit nothing).',
      default: 67108864,
      minimum: 1024,
    }),
  },
  { additionalProperties: false, description: 'The in-process store (one gateway instance; exact within the process).', default: {} },
);

export const RedisStoreSchema = Type.Object(
  {
    mode: Type.Union([Type.Literal('standalone'), Type.Literal('sentinel'), Type.Literal('cluster')], {
      description:
        "How Redis is deployed: one server (or a managed primary), Sentinel-managed primary, or Redis Cluster. On a Cluster the response cache keeps each route's keys under one hash tag (a route's cache lives on one shard; routes spread over the shards), so a request with both a rate limit and a cache lookup makes two script calls at once instead of one, and a purge or write that spans routes updates each route's keys.",
      default: 'standalone',
    }),
    url: Type.Optional(
      Type.String({
        description:
          'Standalone server, redis://[user:password@]host:port[/db] or rediss:// for TLS. Required in standalone mode; use ${ENV} for the password.',
        pattern: '^rediss?://',
        expected: 'a redis:// or rediss:// URL',
      }),
    ),
    nodes: Type.Array(Type.String({ description: 'A cluster node, host:port.', pattern: HOST_PORT, expected: HOST_PORT_WORDS }), {
      description: 'Cluster mode: some nodes to discover the cluster from (one is enough; more survive a node being down).',
      default: [],
    }),
    sentinels: Type.Array(Type.String({ description: 'A Sentinel, host:port.', pattern: HOST_PORT, expected: HOST_PORT_WORDS }), {
      description: 'Sentinel mode: the Sentinels to ask for the current primary.',
      default: [],
    }),
    masterName: Type.String({ description: 'Sentinel mode: the monitored primary name.', default: 'mymaster' }),
    username: Type.Optional(Type.String({ description: 'ACL user for cluster and Sentinel-managed nodes (standalone: put it in `url`).' })),
    password: Type.Optional(Type.String({ description: 'Password for cluster and Sentinel-managed nodes (standalone: put it in `url`).' })),
    sentinelPassword: Type.Optional(Type.String({ description: 'Password of the Sentinels themselves, when they require one.' })),
    db: Type.Integer({ description: 'Database number (standalone without a /db in the url, and Sentinel).', default: 0, minimum: 0 }),
    tls: Type.Boolean({ description: 'Use TLS to cluster and Sentinel-managed nodes (standalone: use a rediss:// url).', default: false }),
    keyPrefix: Type.String({
      description: 'Prefix of every key the gateway writes, so several gateways (or other apps) can share a Redis.',
      default: 'gw:',
      pattern: '^[^{}\\s]{0,64}$',
      expected: 'at most 64 characters without braces or whitespace',
    }),
    timeoutMs: Type.Integer({
      description:
        "Budget of one store call (milliseconds). Past it, or with Redis down, the request takes its route's failMode instead of waiting.",
      default: 50,
      minimum: 1,
    }),
    connectTimeoutMs: Type.Integer({
      description: 'Time allowed to open a connection, and to wait for Redis at start-up before starting without it (milliseconds).',
      default: 2000,
      minimum: 1,
    }),
    reconnectMaxDelayMs: Type.Integer({
      description: 'Longest pause between reconnection attempts; the gateway retries forever, backing off up to this (milliseconds).',
      default: 1000,
      minimum: 10,
    }),
    maxPending: Type.Integer({
      description:
        'Most calls waiting on Redis at once (per connection pool). Past it calls fail at once, so a hung Redis cannot pile commands up.',
      default: 2000,
      minimum: 1,
    }),
    replicas: Type.Union([Type.Integer({ minimum: 1 }), Type.Literal('auto')], {
      description:
        'How many gateway replicas share this Redis. Routes with rateLimit.failMode local divide each bucket (rate and burst) by it while Redis cannot answer, so the replicas together admit about the limit. Set it to the replica count, or auto: the count in the environment variable GATEWAY_REPLICAS, which the Helm chart fills (replicaCount, or autoscaling.minReplicas); too low admits more than the limit, too high less.',
      default: 1,
    }),
    autoPipelining: Type.Boolean({
      description:
        'ioredis auto-pipelining (Cluster mode: commands of one tick to one node go out in one write). Standalone and Sentinel connections gather the gate calls of a whole event-loop turn into one write without it, which measured cheaper than with it here (npm run bench: ratelimit-redis vs ratelimit-redis-autopipe, cache-hit-redis vs cache-hit-redis-autopipe).',
      default: false,
    }),
  },
  { additionalProperties: false, description: 'Redis connection of the shared store.', default: {} },
);

export const StoreSchema = Type.Object(
  {
    type: Type.Union([Type.Literal('memory'), Type.Literal('redis')], {
      description: 'Where rate-limit buckets live: memory (one instance) or redis (shared by every replica, exact across them).',
      default: 'memory',
    }),
    memory: MemoryStoreSchema,
    redis: RedisStoreSchema,
  },
  { additionalProperties: false, description: 'Shared state backend for rate limits (and the response cache).', default: {} },
);

export type StoreConfig = Static<typeof StoreSchema>;
export type RedisStoreConfig = Static<typeof RedisStoreSchema>;

/** store.redis.replicas as a count: parseConfig replaced `auto` by GATEWAY_REPLICAS, so only a number is left. */
export function replicaCount(replicas: RedisStoreConfig['replicas']): number {
  return typeof replicas === 'number' ? replicas : 1;
}

-- The gate: one atomic call per request that decides every token bucket the request is subject to.
--
-- Buckets are GCRA: each key holds the time (microseconds, Redis clock) at which the bucket will be
-- full again, and expires then, so an absent key is a full bucket and no key outlives its use.
-- A request is admitted only if every bucket has a token; then one token is taken from each.
-- A rejected request writes nothing. Time comes from Redis TIME so replicas with skewed clocks agree.
-- src/store/gcra.ts does the same arithmetic in process; keep the two in step.
--
-- Layout (sections, so later steps can join the same call):
--   ARGV[1]                 n, the number of buckets; KEYS[1..n] are their keys (one hash tag)
--   ARGV[2i], ARGV[2i+1]    bucket i: microseconds per token, burst
--   reply[1]                1 admitted, 0 rejected
--   reply[2 + 4(i-1) ..]    bucket i: tokens left, ms until a token (0 if it had one),
--                           ms until the next token (0 when full), ms until full
-- A later section starts at KEYS[n+1], ARGV[2n+2] and reply[2+4n].
--
-- The response-cache section (optional; read-only):
--   ARGV[2n+2]              m, the number of cache keys: KEYS[n+1] the primary entry key, KEYS[n+2]
--                           the generation clock, then the variant key when ARGV[2n+3] is 1, then
--                           the request's generation keys up to KEYS[n+m]
--   ARGV[2n+3]              1 when KEYS[n+3] is a variant key, else 0
--   reply[2+4n]             the value at the primary key (an entry, or a vary marker naming the
--                           request headers the URL varies on), or nil
--   reply[3+4n]             the clock now (the stamp of an entry filled after this lookup)
--   reply[4+4n]             the highest generation of the request (the entry is valid iff its stamp >= it)
--   reply[5+4n]             the value at the variant key, or nil (absent, or none asked)
--
-- On Redis Cluster the cache keys of a route carry the route's own hash tag (src/plugins/cache/keys.ts),
-- not the buckets' one: the store then sends the two sections as two calls of this script at once, the
-- buckets with no cache section and the cache section with n = 0 (src/store/redis.ts, ClusterRedisStore).

if redis.replicate_commands then redis.replicate_commands() end

local n = tonumber(ARGV[1])
local reply = { 1 }

if n > 0 then
  local time = redis.call('TIME')
  local now = tonumber(time[1]) * 1000000 + tonumber(time[2])
  local tats = redis.call('MGET', unpack(KEYS, 1, n))
  local debts = {}
  local admitted = true
  for i = 1, n do
    local interval = tonumber(ARGV[2 * i])
    local tat = tonumber(tats[i])
    local d = 0
    if tat and tat > now then d = tat - now end
    debts[i] = d
    if d + interval > tonumber(ARGV[2 * i + 1]) * interval then admitted = false end
  end
  if not admitted then reply[1] = 0 end
  for i = 1, n do
    local interval = tonumber(ARGV[2 * i])
    local cap = tonumber(ARGV[2 * i + 1]) * interval
    local d = debts[i]
    local retry = 0
    if admitted then
      d = d + interval
      redis.call('SET', KEYS[i], string.format('%.0f', now + d), 'PX', math.ceil(d / 1000))
    elseif d + interval > cap then
      retry = d + interval - cap
    end
    local nextUs = 0
    if d > 0 then
      nextUs = d % interval
      if nextUs == 0 then nextUs = interval end
    end
    local at = 2 + 4 * (i - 1)
    reply[at] = math.floor((cap - d) / interval)
    reply[at + 1] = math.ceil(retry / 1000)
    reply[at + 2] = math.ceil(nextUs / 1000)
    reply[at + 3] = math.ceil(d / 1000)
  end
end

local m = tonumber(ARGV[2 * n + 2] or '0')
if m > 0 then
  local base = 2 + 4 * n
  local v = tonumber(ARGV[2 * n + 3] or '0')
  -- One read for the whole section (each redis.call costs the server about as much as a small
  -- command): the entry, the clock, the variant when asked, then the generations. An absent key
  -- reads as false, which Redis sends back as a nil bulk.
  local vals = redis.call('MGET', unpack(KEYS, n + 1, n + m))
  reply[base] = vals[1]
  reply[base + 1] = tonumber(vals[2]) or 0
  local maxGen = 0
  for i = 3 + v, m do
    local g = tonumber(vals[i])
    if g and g > maxGen then maxGen = g end
  end
  reply[base + 2] = maxGen
  -- false (not nil) keeps the reply's length fixed.
  reply[base + 3] = false
  if v == 1 then reply[base + 3] = vals[3] end
end

return reply

-- ferrolite_replicas_v1: the live `ferrolite serve` replicas of a cluster (heartbeats).
--
-- Each replica's record is a field of a hash; when it last beat is its score in a sorted set.
-- Both keys carry the same hash tag, so the script runs on one slot of a Redis Cluster.
-- Records whose last beat is older than the TTL are dropped on every call, so a replica that
-- stopped without leaving disappears after its TTL.
--
-- KEYS[1]  the records (a hash: replica id -> JSON)
-- KEYS[2]  the last beats (a sorted set: replica id scored by Unix ms)
-- ARGV[1]  "beat" | "leave" | "list"
-- ARGV[2]  now (Unix ms, the calling replica's clock)
-- ARGV[3]  the TTL in ms
-- ARGV[4]  the replica's id (beat, leave)
-- ARGV[5]  the replica's record (beat)
-- Returns, for "list", a flat array: id, record, last beat (ms), ... ; otherwise 1.
local now = tonumber(ARGV[2])
local ttl = tonumber(ARGV[3])
local stale = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', '(' .. (now - ttl))
for _, id in ipairs(stale) do
  redis.call('HDEL', KEYS[1], id)
  redis.call('ZREM', KEYS[2], id)
end
if ARGV[1] == 'beat' then
  redis.call('HSET', KEYS[1], ARGV[4], ARGV[5])
  redis.call('ZADD', KEYS[2], now, ARGV[4])
  -- Every key goes once no replica beats for ten TTLs.
  redis.call('PEXPIRE', KEYS[1], ttl * 10)
  redis.call('PEXPIRE', KEYS[2], ttl * 10)
  return 1
end
if ARGV[1] == 'leave' then
  redis.call('HDEL', KEYS[1], ARGV[4])
  redis.call('ZREM', KEYS[2], ARGV[4])
  return 1
end
local beats = redis.call('ZRANGE', KEYS[2], 0, -1, 'WITHSCORES')
local out = {}
for i = 1, #beats, 2 do
  local record = redis.call('HGET', KEYS[1], beats[i])
  if record then
    out[#out + 1] = beats[i]
    out[#out + 1] = record
    out[#out + 1] = beats[i + 1]
  end
end
return out

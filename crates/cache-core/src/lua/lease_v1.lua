-- ferrolite_lease_v1: take one of `limit` shared slots (max parallel requests, half-open probes).
--
-- The slots are a sorted set of lease tokens scored by their expiry (Redis server time): expired
-- leases are dropped first, so a crashed instance's leases free themselves after their TTL and
-- can never pin a deployment as busy. A holder renews its lease while its call runs.
--
-- KEYS[1]  the slots (a sorted set)
-- ARGV[1]  "take" | "renew"
-- ARGV[2]  the lease token
-- ARGV[3]  the slot limit (take)
-- ARGV[4]  the lease's time to live in ms
-- Returns 1 when the lease is held after the call, 0 otherwise.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local ttl = tonumber(ARGV[4])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
if ARGV[1] == 'renew' then
  local held = redis.call('ZADD', KEYS[1], 'XX', 'CH', now + ttl, ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ttl * 2)
  return held
end
if redis.call('ZCARD', KEYS[1]) < tonumber(ARGV[3]) then
  redis.call('ZADD', KEYS[1], now + ttl, ARGV[2])
  redis.call('PEXPIRE', KEYS[1], ttl * 2)
  return 1
end
return 0

-- ferrolite_incr_v2: apply one batched counter delta exactly once.
--
-- The increment pipeline sends each delta with this instance's id and a sequence number that only
-- grows. A flush that timed out may or may not have reached Redis; the pipeline then resends the
-- same (instance, sequence, delta), and this script applies it only if that sequence is newer than
-- the last one applied for the instance. So nothing is lost and nothing is counted twice.
--
-- The sequence hash outlives the counter by ARGV[7] ms, so a resend that arrives after the
-- counter expired is still recognised (and not applied to a fresh key). Each field is
-- "sequence:server ms"; when the hash holds more than 32 instances, fields older than the grace
-- period are dropped, so a key written for ever by restarting instances stays small.
--
-- KEYS[1]  the counter
-- KEYS[2]  a hash: instance id -> "last sequence applied:server ms" (same hash slot as KEYS[1])
-- ARGV[1]  instance id
-- ARGV[2]  sequence number
-- ARGV[3]  delta (integer, or a float when ARGV[6] == "float")
-- ARGV[4]  expiry in milliseconds
-- ARGV[5]  "nx": expiry set only when the key has none (window fixed from the first write);
--          "always": expiry refreshed on every write
-- ARGV[6]  "int" | "float"
-- ARGV[7]  grace in milliseconds the sequence hash outlives the counter
-- Returns { value after the call (bulk string or nil), remaining ttl in ms (integer) }.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local entry = redis.call('HGET', KEYS[2], ARGV[1])
local last = 0
if entry then
  last = tonumber(string.match(entry, '^(%d+)')) or 0
end
if tonumber(ARGV[2]) > last then
  if ARGV[6] == 'float' then
    redis.call('INCRBYFLOAT', KEYS[1], ARGV[3])
  else
    redis.call('INCRBY', KEYS[1], ARGV[3])
  end
  if ARGV[5] == 'nx' then
    redis.call('PEXPIRE', KEYS[1], ARGV[4], 'NX')
  else
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
  end
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2] .. ':' .. now)
  local ttl = redis.call('PTTL', KEYS[1])
  if ttl < 0 then ttl = tonumber(ARGV[4]) end
  redis.call('PEXPIRE', KEYS[2], ttl + tonumber(ARGV[7]))
  if redis.call('HLEN', KEYS[2]) > 32 then
    local fields = redis.call('HGETALL', KEYS[2])
    for i = 1, #fields, 2 do
      local at = tonumber(string.match(fields[i + 1], ':(%d+)$')) or 0
      if at + tonumber(ARGV[7]) < now then
        redis.call('HDEL', KEYS[2], fields[i])
      end
    end
  end
end
return { redis.call('GET', KEYS[1]), redis.call('PTTL', KEYS[1]) }

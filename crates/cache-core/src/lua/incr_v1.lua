-- ferrolite_incr_v1: apply one batched counter delta exactly once.
--
-- The increment pipeline sends each delta with this instance's id and a sequence number that only
-- grows. A flush that timed out may or may not have reached Redis; the pipeline then resends the
-- same (instance, sequence, delta), and this script applies it only if that sequence is newer than
-- the last one applied for the instance. So nothing is lost and nothing is counted twice.
--
-- KEYS[1]  the counter
-- KEYS[2]  a hash: instance id -> last sequence applied (same hash slot as KEYS[1])
-- ARGV[1]  instance id
-- ARGV[2]  sequence number
-- ARGV[3]  delta (integer, or a float when ARGV[6] == "float")
-- ARGV[4]  expiry in milliseconds
-- ARGV[5]  "nx": expiry set only when the key has none (window fixed from the first write);
--          "always": expiry refreshed on every write
-- ARGV[6]  "int" | "float"
-- Returns the counter's value after the call (a bulk string), or nil.
local last = tonumber(redis.call('HGET', KEYS[2], ARGV[1]) or '0')
if tonumber(ARGV[2]) > last then
  if ARGV[6] == 'float' then
    redis.call('INCRBYFLOAT', KEYS[1], ARGV[3])
  else
    redis.call('INCRBY', KEYS[1], ARGV[3])
  end
  redis.call('HSET', KEYS[2], ARGV[1], ARGV[2])
  if ARGV[5] == 'nx' then
    redis.call('PEXPIRE', KEYS[1], ARGV[4], 'NX')
    redis.call('PEXPIRE', KEYS[2], ARGV[4], 'NX')
  else
    redis.call('PEXPIRE', KEYS[1], ARGV[4])
    redis.call('PEXPIRE', KEYS[2], ARGV[4])
  end
end
return redis.call('GET', KEYS[1])

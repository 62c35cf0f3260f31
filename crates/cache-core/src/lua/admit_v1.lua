-- ferrolite_admit_v1: strict-mode admission. For every limited counter the request touches,
-- check `count + delta <= limit` in its window; increment all of them, or none.
--
-- Time is Redis server time, so every instance sees the same window boundaries. Each counter is a
-- hash whose fields are window bucket numbers (floor(now_ms / window_ms)); sliding windows weigh
-- the previous bucket by the part of it still inside the window (the same formula as
-- window.rs). Buckets older than the previous one are deleted; the hash expires after
-- two windows.
--
-- KEYS[i]          counter i (all keys in one hash slot on Redis Cluster: use a {hash tag})
-- ARGV[4(i-1)+1]   delta for counter i
-- ARGV[4(i-1)+2]   limit for counter i
-- ARGV[4(i-1)+3]   window length in ms for counter i
-- ARGV[4(i-1)+4]   "fixed" | "sliding"
-- Returns { admitted (1|0), now_ms (string), count_1 (string), ..., count_n (string) } where each
-- count includes the delta when admitted.
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = #KEYS
local counts = {}
local buckets = {}
local admitted = 1
for i = 1, n do
  local a = (i - 1) * 4
  local delta = tonumber(ARGV[a + 1])
  local limit = tonumber(ARGV[a + 2])
  local window = tonumber(ARGV[a + 3])
  local bucket = math.floor(now / window)
  buckets[i] = bucket
  local count
  if ARGV[a + 4] == 'sliding' then
    local both = redis.call('HMGET', KEYS[i], tostring(bucket), tostring(bucket - 1))
    local elapsed = (now - bucket * window) / window
    count = tonumber(both[2] or '0') * (1 - elapsed) + tonumber(both[1] or '0')
  else
    count = tonumber(redis.call('HGET', KEYS[i], tostring(bucket)) or '0')
  end
  counts[i] = count
  if count + delta > limit then
    admitted = 0
  end
end
if admitted == 1 then
  for i = 1, n do
    local a = (i - 1) * 4
    local window = tonumber(ARGV[a + 3])
    redis.call('HINCRBYFLOAT', KEYS[i], tostring(buckets[i]), ARGV[a + 1])
    -- At most the current and the previous bucket are needed; drop older ones when a new
    -- bucket has started (HLEN is O(1), so the common case costs no scan).
    if redis.call('HLEN', KEYS[i]) > 2 then
      for _, field in ipairs(redis.call('HKEYS', KEYS[i])) do
        if tonumber(field) == nil or tonumber(field) < buckets[i] - 1 then
          redis.call('HDEL', KEYS[i], field)
        end
      end
    end
    redis.call('PEXPIRE', KEYS[i], window * 2)
    counts[i] = counts[i] + tonumber(ARGV[a + 1])
  end
end
local out = { admitted, tostring(now) }
for i = 1, n do
  out[#out + 1] = string.format('%.17g', counts[i])
end
return out

-- ferrolite_admit_v2: strict-mode admission on the counters selection reads. For every limit the
-- request touches (rpm and tpm of a deployment, for instance), check `count + delta <= limit` in
-- its window and increment all of them, or none.
--
-- The counters are the batched pipeline's own window-bucket keys (`{id}:model:rpm:<bucket>`):
-- one key family that strict admission writes and selection reads back. The caller names the
-- current and previous bucket keys (from its clock); Redis server time weighs the previous
-- bucket of a sliding window, clamped to the caller's bucket, so instances with skewed clocks
-- only ever err towards "more used" at a boundary.
--
-- Admissions carry a token. When the caller gave up waiting for the reply (timeout, Redis
-- frozen) it sends ferrolite_admit_cancel_v2 for the token: if this script ran first, the
-- cancel gives the deltas back; if the cancel ran first, it left a tombstone and this script
-- changes nothing. So a refused caller never consumes a slot.
--
-- KEYS[1]          the admission's marker (same hash slot as the counters)
-- KEYS[2i]         counter i, current bucket
-- KEYS[2i+1]       counter i, previous bucket
-- ARGV[1]          marker lifetime in ms
-- ARGV[5(i-1)+2]   delta of counter i (integer >= 0)
-- ARGV[5(i-1)+3]   limit of counter i
-- ARGV[5(i-1)+4]   start of the current bucket (Unix ms, caller's clock)
-- ARGV[5(i-1)+5]   window length in ms; 0 for a fixed window (the previous bucket does not count)
-- ARGV[5(i-1)+6]   counter lifetime in ms
-- Returns { status (1 admitted, 0 refused, 2 cancelled before it ran), now_ms (integer),
--           then per counter: the window's count (string, including the delta when admitted),
--           the current bucket's raw value after the call (integer) }.
-- A counter holding something else than an integer is an error before anything is written.
local function count_of(key)
  local v = redis.call('GET', key)
  if not v then return 0 end
  local n = tonumber(v)
  if not n then
    error({ err = 'ERR ferrolite_admit_v2: ' .. key .. ' holds a value that is not an integer' })
  end
  return n
end

local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local n = (#KEYS - 1) / 2
if redis.call('EXISTS', KEYS[1]) == 1 then
  return { 2, now }
end
local counts = {}
local raw = {}
local admitted = 1
for i = 1, n do
  local a = (i - 1) * 5 + 1
  local delta = tonumber(ARGV[a + 1])
  local limit = tonumber(ARGV[a + 2])
  local start = tonumber(ARGV[a + 3])
  local window = tonumber(ARGV[a + 4])
  raw[i] = count_of(KEYS[2 * i])
  local count = raw[i]
  if window > 0 then
    local elapsed = (now - start) / window
    if elapsed < 0 then elapsed = 0 end
    if elapsed > 1 then elapsed = 1 end
    local previous = count_of(KEYS[2 * i + 1])
    count = count + previous * (1 - elapsed)
  end
  counts[i] = count
  if count + delta > limit then
    admitted = 0
  end
end
if admitted == 1 then
  for i = 1, n do
    local a = (i - 1) * 5 + 1
    raw[i] = redis.call('INCRBY', KEYS[2 * i], ARGV[a + 1])
    redis.call('PEXPIRE', KEYS[2 * i], ARGV[a + 5])
    counts[i] = counts[i] + tonumber(ARGV[a + 1])
  end
  redis.call('SET', KEYS[1], 'applied', 'PX', ARGV[1])
end
local out = { admitted, now }
for i = 1, n do
  out[#out + 1] = string.format('%.17g', counts[i])
  out[#out + 1] = raw[i]
end
return out

-- ferrolite_admit_cancel_v2: withdraw a strict admission whose reply never arrived.
--
-- If ferrolite_admit_v2 applied the admission (its marker says "applied"), give every delta
-- back; in every case leave the marker as "cancelled", so an admission still on its way (Redis
-- was frozen, the command is queued) changes nothing when it runs. Counters that expired in the
-- meantime are left alone (their count is gone with them).
--
-- KEYS[1]      the admission's marker
-- KEYS[i+1]    counter i, the bucket the admission incremented
-- ARGV[1]      marker lifetime in ms
-- ARGV[i+1]    delta of counter i
-- Returns 1 if deltas were given back, 0 otherwise.
local state = redis.call('GET', KEYS[1])
local undone = 0
if state == 'applied' then
  for i = 2, #KEYS do
    if redis.call('EXISTS', KEYS[i]) == 1 then
      redis.call('DECRBY', KEYS[i], ARGV[i])
    end
  end
  undone = 1
end
redis.call('SET', KEYS[1], 'cancelled', 'PX', ARGV[1])
return undone

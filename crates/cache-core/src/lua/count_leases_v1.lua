-- ferrolite_count_leases_v1: the leases not yet expired under each key, in one round trip.
--
-- A lease set (see ferrolite_lease_v1) is a sorted set of lease tokens scored by their expiry;
-- the leases held are those scored after now. One ZCOUNT per key, run by the server: a read of
-- every deployment's leases is one command instead of one per deployment.
--
-- KEYS     the lease sets (on a cluster, of one slot)
-- ARGV[1]  now, in ms (the caller's wall clock, as the pipelined ZCOUNTs compare it)
-- Returns one count per key, in order.
local after = '(' .. ARGV[1]
local counts = {}
for i, key in ipairs(KEYS) do
  counts[i] = redis.call('ZCOUNT', key, after, '+inf')
end
return counts

-- ferrolite_budget_reserve_v1: reserve `amount` against every budget scope a call touches, or
-- none: the check and the increments happen in one atomic step, so concurrent calls on any
-- number of instances cannot reserve past a limit.
--
-- KEYS[i]         the spend counter of scope i in its current window
--                 (all keys carry the {budgets} hash tag, so they share a Redis Cluster slot)
-- ARGV[1]         amount (USD)
-- ARGV[2i]        limit of scope i
-- ARGV[2i+1]      expiry of scope i's counter, in ms
-- Returns { admitted (1|0), spend_1 (string), ..., spend_n (string) }: spends after the call.
local amount = tonumber(ARGV[1])
local spends = {}
local admitted = 1
for i = 1, #KEYS do
  spends[i] = tonumber(redis.call('GET', KEYS[i]) or '0')
  if spends[i] + amount > tonumber(ARGV[2 * i]) then
    admitted = 0
  end
end
if admitted == 1 and amount > 0 then
  for i = 1, #KEYS do
    spends[i] = tonumber(redis.call('INCRBYFLOAT', KEYS[i], ARGV[1]))
    redis.call('PEXPIRE', KEYS[i], ARGV[2 * i + 1])
  end
end
local out = { admitted }
for i = 1, #KEYS do
  out[#out + 1] = string.format('%.17g', spends[i])
end
return out

-- ferrolite_set_later_v1: a watched deadline only moves later.
--
-- Cooldowns, failed health checks and half-open probes are deadlines (Unix ms) shared by every
-- instance. Setting one never shortens it: a deployment cooled down again while already cooling
-- keeps the later end (LiteLLM kept the first, shorter one, #40130).
--
-- KEYS[1]  the deadline
-- ARGV[1]  the new deadline (Unix ms)
-- ARGV[2]  how long the key lives, in ms (until the deadline, measured on the caller's clock)
-- Returns the deadline stored after the call (a bulk string).
local current = tonumber(redis.call('GET', KEYS[1]) or '0') or 0
local proposed = tonumber(ARGV[1])
if proposed > current then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return ARGV[1]
end
return tostring(current)

"""The Lua behind a provider's limits, with bulk's share and tenants' fair parts in it.

Written here rather than taken from a library: the rate limiters on PyPI (limits,
redis-cell, throttled) count one key at a time, and what editq needs is one atomic
decision over three things at once: the provider's whole limit, bulk's share of it, and
each tenant's weighted part of that share, with the tenants still waiting remembered
between calls. The policy, in words (the README's "Fair share" says the same):

- Interactive work (priority "normal") is held only by the provider's whole limit, so it
  may always use the part bulk may not take, and borrow whatever bulk leaves idle.
- Bulk work (priority "low", a batch's jobs by default) may take at most `bulk_cap` of
  the limit (EDITQ_BULK_SHARE of it, at least 1).
- Within bulk's cap, a tenant's part is the cap times its weight over the weights of the
  tenants active there (holding some of it, or refused and expected back). A tenant over
  its part is refused only while another one is waiting below its own: work-conserving,
  so one tenant alone may use all of bulk's cap.

Both scripts take Redis' clock. Refusals answer the seconds to wait.
"""

from __future__ import annotations

# fair(held, total, cap, tenant, weight, waiting key, weights key, now) -> refused?
# held: tenant -> count in this resource; total: bulk's count; cap: bulk's cap.
_FAIR = """
local function weight_of(weights_key, who)
  return tonumber(redis.call('HGET', weights_key, who)) or 1
end
local function fair_refuses(held, total, cap, tenant, weight, waiting_key, weights_key, now)
  redis.call('ZREMRANGEBYSCORE', waiting_key, '-inf', now)
  redis.call('HSET', weights_key, tenant, weight)
  if total >= cap then return true end
  local waiters = redis.call('ZRANGE', waiting_key, 0, -1)
  local active, sum = {[tenant] = true}, 0
  for who, _ in pairs(held) do active[who] = true end
  for _, who in ipairs(waiters) do active[who] = true end
  for who, _ in pairs(active) do sum = sum + weight_of(weights_key, who) end
  local function part(who) return cap * weight_of(weights_key, who) / sum end
  if (held[tenant] or 0) + 1 <= part(tenant) then return false end
  for _, who in ipairs(waiters) do
    if who ~= tenant and (held[who] or 0) < part(who) then return true end
  end
  return false
end
local function mark_waiting(waiting_key, tenant, back_at)
  local was = tonumber(redis.call('ZSCORE', waiting_key, tenant))
  if not was or was < back_at then redis.call('ZADD', waiting_key, back_at, tenant) end
end
"""

# KEYS: all calls' window (zset), pause flag, bulk calls' window (zset, member
# tenant<TAB>call), waiting tenants (zset), weights (hash).
# ARGV: window seconds, limit, call id, tenant ('' for interactive), bulk cap, weight,
# floor of a bulk refusal's wait. Returns {taken, wait seconds}.
RATE = _FAIR + """
local paused = redis.call('PTTL', KEYS[2])
if paused > 0 then
  return {0, tostring(paused / 1000)}
end
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local window, limit, tenant = tonumber(ARGV[1]), tonumber(ARGV[2]), ARGV[4]
local floor = tonumber(ARGV[7])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now - window)
redis.call('ZREMRANGEBYSCORE', KEYS[3], '-inf', now - window)
local function oldest(key)
  local first = redis.call('ZRANGE', key, 0, 0, 'WITHSCORES')
  return first[2] and (tonumber(first[2]) + window - now) or window
end
local function refuse(wait)
  if tenant ~= '' then
    wait = math.max(wait, floor)
    mark_waiting(KEYS[4], tenant, now + wait + 2)
  end
  return {0, tostring(wait)}
end
if redis.call('ZCARD', KEYS[1]) >= limit then
  return refuse(oldest(KEYS[1]))
end
if tenant ~= '' then
  local held, total, mine = {}, 0, nil
  for _, entry in ipairs(redis.call('ZRANGE', KEYS[3], 0, -1)) do
    local who = entry:sub(1, (entry:find('\t', 1, true) or 1) - 1)
    held[who] = (held[who] or 0) + 1
    total = total + 1
    if who == tenant and not mine then mine = entry end  -- its oldest call
  end
  if fair_refuses(held, total, tonumber(ARGV[5]), tenant, ARGV[6], KEYS[4], KEYS[5], now) then
    local wait = oldest(KEYS[3])
    if mine then wait = tonumber(redis.call('ZSCORE', KEYS[3], mine)) + window - now end
    return refuse(wait)
  end
  redis.call('ZADD', KEYS[3], now, tenant .. '\\t' .. ARGV[3])
  redis.call('PEXPIRE', KEYS[3], math.ceil(window * 1000) + 1000)
end
redis.call('ZADD', KEYS[1], now, ARGV[3])
redis.call('PEXPIRE', KEYS[1], math.ceil(window * 1000) + 1000)
return {1, '0'}
"""

# KEYS: in-flight slots (zset: job id -> lease end), bulk's slots (hash: job id -> tenant),
# waiting tenants (zset), weights (hash).
# ARGV: lease seconds, cap, job id, force ('1': a look renewing its own slot, never
# refused), tenant ('' for interactive), bulk cap, weight, floor of a bulk refusal's wait.
# Returns {taken, wait seconds}.
CONCURRENCY = _FAIR + """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local gone = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now)
for i = 1, #gone, 1000 do
  redis.call('HDEL', KEYS[2], unpack(gone, i, math.min(i + 999, #gone)))
end
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', now)
local lease, job, tenant = tonumber(ARGV[1]), ARGV[3], ARGV[5]
local function take()
  redis.call('ZADD', KEYS[1], now + lease, job)
  if tenant ~= '' then redis.call('HSET', KEYS[2], job, tenant) end
  return {1, '0'}
end
if redis.call('ZSCORE', KEYS[1], job) or ARGV[4] == '1' then
  return take()
end
local function refuse()
  local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
  local wait = math.max(0.05, (first[2] and tonumber(first[2]) or now) - now)
  if tenant ~= '' then
    wait = math.max(wait, tonumber(ARGV[8]))
    mark_waiting(KEYS[3], tenant, now + wait + 2)
  end
  return {0, tostring(wait)}
end
if redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[2]) then
  return refuse()
end
if tenant ~= '' then
  local held, total = {}, 0
  for _, who in ipairs(redis.call('HVALS', KEYS[2])) do
    held[who] = (held[who] or 0) + 1
    total = total + 1
  end
  if fair_refuses(held, total, tonumber(ARGV[6]), tenant, ARGV[7], KEYS[3], KEYS[4], now) then
    return refuse()
  end
end
return take()
"""

# KEYS: in-flight slots; ARGV: lease seconds, then the job ids whose slots to renew
# (only slots still held: XX never takes a new one).
RENEW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local lease = tonumber(ARGV[1])
local renewed = 0
for i = 2, #ARGV do
  renewed = renewed + redis.call('ZADD', KEYS[1], 'XX', 'CH', now + lease, ARGV[i])
end
return renewed
"""

# The feeder's pace for bulk: a token bucket. KEYS: the bucket (hash: tokens, at).
# ARGV: tokens per second, most tokens held, tokens wanted. Returns the tokens granted.
PACE = """
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local rate, most, wanted = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3])
local tokens = tonumber(redis.call('HGET', KEYS[1], 'tokens')) or most
local at = tonumber(redis.call('HGET', KEYS[1], 'at')) or now
tokens = math.min(most, tokens + math.max(0, now - at) * rate)
local granted = math.min(wanted, math.floor(tokens))
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens - granted), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(most / rate * 1000) + 60000)
return granted
"""

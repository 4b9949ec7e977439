"""The lock's Lua scripts: each operation is one round trip and atomic on the Redis server.

Keys of one lock (all carry the hash tag `{lock:<name>}`, so Redis Cluster keeps them in one slot):
  KEYS[1] `<prefix>{lock:<name>}`          the lock itself: the holder's token, with PX expiry
  KEYS[2] `<prefix>{lock:<name>}:fence`    the fence counter, INCRed on every grant (never expires)
  KEYS[3] `<prefix>{lock:<name>}:queue`    FIFO list of waiting tokens
  KEYS[4] `<prefix>{lock:<name>}:waiters`  hash token -> "<ttl_ms>:<alive_until_ms>:<queued_since_ms>"
  KEYS[5] `<prefix>{lock:<name>}:grant:<token>`  the caller's grant list, BLPOPed while waiting

Waiting: a waiter queues once and BLPOPs its grant list. When the lock is released with waiters
queued and the oldest live one has waited `fair_after` ms or more, the release script hands the
lock straight to it (SET to its token, INCR the fence, push the fence on its grant list): it owns
the lock without another round trip and nobody can barge ahead of it. A younger head is only woken
(a 0 on its grant list) and competes with newcomers, typically the process that just released:
under heavy contention that spares a process switch per grant, and fair_after bounds how long any
waiter can be passed over (no starvation). fair_after = 0: strict FIFO hand-off at every release.

A waiter proves it is alive by calling the acquire script again at least every `alive` ms; a dead
waiter's entry is skipped, so it cannot stall the queue. Grant keys of other waiters are derived
from KEYS[1] inside the scripts: same hash tag, same slot.
"""

_COMMON = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

local function parse(info)
  local a = string.find(info, ':', 1, true)
  local b = string.find(info, ':', a + 1, true)
  return tonumber(string.sub(info, 1, a - 1)), tonumber(string.sub(info, a + 1, b - 1)),
    tonumber(string.sub(info, b + 1))
end

-- Hand the free lock to `who`, the head of the queue.
local function grant(lock, fence, queue, waiters, who, ttl)
  redis.call('LPOP', queue)
  redis.call('HDEL', waiters, who)
  redis.call('SET', lock, who, 'PX', ttl)
  local f = redis.call('INCR', fence)
  local g = lock .. ':grant:' .. who
  redis.call('RPUSH', g, f)
  redis.call('PEXPIRE', g, ttl)
  return f
end

-- The first live waiter (dead ones at the head are dropped): token, ttl, queued_since; or nil.
local function live_head(queue, waiters, now)
  while true do
    local head = redis.call('LINDEX', queue, 0)
    if not head then
      return nil
    end
    local info = redis.call('HGET', waiters, head)
    if info then
      local ttl, alive_until, since = parse(info)
      if alive_until >= now then
        return head, ttl, since
      end
    end
    redis.call('LPOP', queue)
    redis.call('HDEL', waiters, head)
  end
end

-- The lock just became free and waiters may be queued: hand it to the head if it has waited
-- `fair_after` ms, else wake it (a 0 on its grant list) to compete with newcomers.
local function pass_on(lock, fence, queue, waiters, now, fair_after)
  local head, ttl, since = live_head(queue, waiters, now)
  if not head then
    return
  end
  if now - since >= fair_after then
    grant(lock, fence, queue, waiters, head, ttl)
  else
    local g = lock .. ':grant:' .. head
    if redis.call('LLEN', g) == 0 then
      redis.call('RPUSH', g, 0)
      redis.call('PEXPIRE', g, ttl)
    end
  end
end

-- Our fence from our grant list (skipping wake-ups), or the counter (it only moves on grants).
local function my_fence(fence, mygrant)
  local f = redis.call('LPOP', mygrant)
  while f == '0' do
    f = redis.call('LPOP', mygrant)
  end
  redis.call('DEL', mygrant)
  return tonumber(f or redis.call('GET', fence))
end
"""

# ARGV: token, ttl_ms, alive_ms, wait ("1": join the queue if the lock is held), push ("1": the
# caller pipelines a BLPOP on its grant list right behind this call, so a grant made here is also
# pushed there for that BLPOP to return at once), fair_after_ms.
# Returns {granted (0/1), fence, pttl_ms}.
ACQUIRE = (
    """
-- Fast path, most calls: nobody waits and the lock is free.
if redis.call('EXISTS', KEYS[3]) == 0 and redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  local f = redis.call('INCR', KEYS[2])
  if ARGV[5] == '1' then
    redis.call('DEL', KEYS[5])
    redis.call('RPUSH', KEYS[5], f)
    redis.call('PEXPIRE', KEYS[5], ARGV[2])
  end
  return {1, f, tonumber(ARGV[2])}
end
"""
    + _COMMON
    + """
local lock, fence, queue, waiters, mygrant = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local token, ttl, alive = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
local wait, push, fair_after = ARGV[4] == '1', ARGV[5] == '1', tonumber(ARGV[6] or '0')

local function granted(f, pttl)
  if push then
    redis.call('RPUSH', mygrant, f)
    redis.call('PEXPIRE', mygrant, ttl)
  end
  return {1, f, pttl}
end

local holder = redis.call('GET', lock)
if holder == token then
  -- Handed to us while we were not blocked on our grant list.
  return granted(my_fence(fence, mygrant), redis.call('PTTL', lock))
end
local now = now_ms()
if not holder then
  local head, head_ttl, since = live_head(queue, waiters, now)
  if head and head ~= token and now - since >= fair_after then
    -- A waiter has waited long enough: it goes first, we queue behind it.
    grant(lock, fence, queue, waiters, head, head_ttl)
  else
    -- Ours: we are the head, nobody waits, or the head is young enough to lose one round.
    if redis.call('HDEL', waiters, token) == 1 then
      redis.call('LREM', queue, 1, token)
    end
    redis.call('DEL', mygrant)  -- a wake-up we have not consumed
    redis.call('SET', lock, token, 'PX', ttl)
    return granted(redis.call('INCR', fence), ttl)
  end
end
if wait then
  local info = redis.call('HGET', waiters, token)
  if info then
    local _, _, since = parse(info)
    redis.call('HSET', waiters, token, ttl .. ':' .. (now + alive) .. ':' .. since)
  else
    redis.call('HSET', waiters, token, ttl .. ':' .. (now + alive) .. ':' .. now)
    redis.call('RPUSH', queue, token)
  end
end
return {0, 0, redis.call('PTTL', lock)}
"""
)

# ARGV: token, fair_after_ms. Compare-and-delete, then hand over to or wake the next live waiter.
# Returns 1 if the caller held the lock, 0 if it had lost it (nothing is touched then).
RELEASE = (
    """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
redis.call('DEL', KEYS[1])
if redis.call('EXISTS', KEYS[3]) == 0 then
  return 1
end
"""
    + _COMMON
    + """
pass_on(KEYS[1], KEYS[2], KEYS[3], KEYS[4], now_ms(), tonumber(ARGV[2] or '0'))
return 1
"""
)

# ARGV: token, fair_after_ms. A waiter gives up (timeout): leave the queue. If the lock was handed
# to it in the meantime it takes it after all ({1, fence, pttl}); else {0, 0, 0}, and if the lock
# is free, the next waiter is served (it may have been woken for us).
CANCEL = (
    _COMMON
    + """
local lock, fence, queue, waiters, mygrant = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local token = ARGV[1]
if redis.call('HDEL', waiters, token) == 1 then
  redis.call('LREM', queue, 1, token)
end
if redis.call('GET', lock) == token then
  return {1, my_fence(fence, mygrant), redis.call('PTTL', lock)}
end
redis.call('DEL', mygrant)
if redis.call('EXISTS', lock) == 0 then
  pass_on(lock, fence, queue, waiters, now_ms(), tonumber(ARGV[2] or '0'))
end
return {0, 0, 0}
"""
)

# ARGV: token, ttl_ms. Returns 1 if extended, 0 if the lock is no longer ours.
EXTEND = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

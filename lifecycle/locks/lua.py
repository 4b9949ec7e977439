"""The lock's Lua scripts: each operation is one round trip and atomic on the Redis server.

Keys of one lock (all carry the hash tag `{lock:<name>}`, so Redis Cluster keeps them in one slot):
  KEYS[1] `<prefix>{lock:<name>}`          the lock itself: the holder's token, with PX expiry
  KEYS[2] `<prefix>{lock:<name>}:fence`    the fence counter, INCRed on every grant (never expires)
  KEYS[3] `<prefix>{lock:<name>}:queue`    FIFO list of waiting tokens (fair hand-off)
  KEYS[4] `<prefix>{lock:<name>}:waiters`  hash token -> "<ttl_ms>:<alive_until_ms>" of each waiter
  KEYS[5] `<prefix>{lock:<name>}:grant:<token>`  the caller's grant list, BLPOPed while waiting

A release hands the lock straight to the oldest live waiter (SET to its token, INCR the fence, push
the fence on its grant list), so a woken waiter owns the lock without another round trip and a
newcomer can never barge ahead of it. A waiter proves it is alive by calling the acquire script
again at least every `alive` ms; a dead waiter's entry is skipped, so it cannot stall the queue.
Grant keys of other waiters are derived from KEYS[1] inside the script: same hash tag, same slot.
"""

# Shared helpers: hand the free lock to the oldest live waiter; returns its token or nil.
_HANDOFF = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

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

-- Drop dead waiters at the head of the queue; stop at `me` (the caller) or at a live waiter,
-- which gets the lock. Returns the token now holding the lock, or nil if the queue is exhausted
-- or the caller is at its head.
local function handoff(lock, fence, queue, waiters, me, now)
  while true do
    local head = redis.call('LINDEX', queue, 0)
    if not head or head == me then
      return nil
    end
    local info = redis.call('HGET', waiters, head)
    if info then
      local sep = string.find(info, ':', 1, true)
      local ttl = tonumber(string.sub(info, 1, sep - 1))
      local alive_until = tonumber(string.sub(info, sep + 1))
      if alive_until >= now then
        grant(lock, fence, queue, waiters, head, ttl)
        return head
      end
    end
    redis.call('LPOP', queue)
    redis.call('HDEL', waiters, head)
  end
end
"""

# ARGV: token, ttl_ms, alive_ms, wait ("1": join the queue if the lock is held)
# Returns {granted (0/1), fence, pttl_ms}.
ACQUIRE = (
    """
-- Fast path, most calls: nobody waits and the lock is free.
if redis.call('EXISTS', KEYS[3]) == 0 and redis.call('SET', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then
  return {1, redis.call('INCR', KEYS[2]), tonumber(ARGV[2])}
end
"""
    + _HANDOFF
    + """
local lock, fence, queue, waiters, mygrant = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local token, ttl, alive, wait = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4] == '1'
local holder = redis.call('GET', lock)
if holder == token then
  -- Handed to us while we were between two BLPOPs.
  local f = redis.call('LPOP', mygrant)
  redis.call('DEL', mygrant)
  if not f then f = redis.call('GET', fence) end
  return {1, tonumber(f), redis.call('PTTL', lock)}
end
local now = now_ms()
if not holder then
  holder = handoff(lock, fence, queue, waiters, token, now)
  if not holder then
    if redis.call('LINDEX', queue, 0) == token then
      redis.call('LPOP', queue)
    end
    redis.call('HDEL', waiters, token)
    redis.call('SET', lock, token, 'PX', ttl)
    return {1, redis.call('INCR', fence), ttl}
  end
end
if wait then
  if redis.call('HSETNX', waiters, token, ttl .. ':' .. (now + alive)) == 1 then
    redis.call('RPUSH', queue, token)
  else
    redis.call('HSET', waiters, token, ttl .. ':' .. (now + alive))
  end
end
return {0, 0, redis.call('PTTL', lock)}
"""
)

# ARGV: token. Compare-and-delete, then hand the lock to the next live waiter.
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
    + _HANDOFF
    + """
local lock, fence, queue, waiters = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
handoff(lock, fence, queue, waiters, nil, now_ms())
return 1
"""
)

# ARGV: token. A waiter gives up (timeout): leave the queue. If the lock was handed to it in the
# meantime it takes it after all (returns {1, fence, pttl}), else {0, 0, 0}.
CANCEL = """
local lock, fence, queue, waiters, mygrant = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5]
local token = ARGV[1]
redis.call('HDEL', waiters, token)
redis.call('LREM', queue, 1, token)
if redis.call('GET', lock) == token then
  local f = redis.call('LPOP', mygrant)
  redis.call('DEL', mygrant)
  if not f then f = redis.call('GET', fence) end
  return {1, tonumber(f), redis.call('PTTL', lock)}
end
redis.call('DEL', mygrant)
return {0, 0, 0}
"""

# ARGV: token, ttl_ms. Returns 1 if extended, 0 if the lock is no longer ours.
EXTEND = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return 0
end
return redis.call('PEXPIRE', KEYS[1], ARGV[2])
"""

"""A test-only fenced resource in Redis: it stores the highest fence it accepted and refuses any
write whose fence is not greater, atomically (the same rule the governance rows apply in SQL)."""

from __future__ import annotations

from redis import Redis

_FENCED_WRITE = """
local last = tonumber(redis.call('HGET', KEYS[1], 'fence') or '0')
if tonumber(ARGV[1]) <= last then
  return 0
end
redis.call('HSET', KEYS[1], 'fence', ARGV[1], 'value', ARGV[2])
return 1
"""


def resource_key(name: str) -> str:
    return f"test:fenced:{name}"


def fenced_write(client: Redis, name: str, fence: int, value: str) -> bool:
    return bool(client.eval(_FENCED_WRITE, 1, resource_key(name), fence, value))


def fenced_value(client: Redis, name: str) -> str | None:
    value = client.hget(resource_key(name), "value")
    return value.decode() if value is not None else None

"""Sessions any instance can continue: one Redis hash per session, changed only by Lua scripts.

A session is a hash whose fields are the top-level keys of its data, each value JSON. Every
change runs as one Lua script, so it is atomic in Redis: two instances updating the same
session at once both keep their changes (different keys never overwrite each other, and
`increment_session` adds rather than reads-then-writes). Every use refreshes the TTL (sliding
expiry). Nothing about a session lives in the instance, so a SIGKILLed instance loses none.
"""

from __future__ import annotations

import json
import re
import secrets
import time
from collections.abc import Iterable, Mapping
from typing import Any

from django.conf import settings

from core.redis import RedisScript, async_redis_client, redis_client
from lifecycle.sessions.conf import sessions_settings

# Not under KEY_PREFIX: it is no session, and the count's own SCAN must not find it.
COUNT_KEY = "omk:sessions-count"

# Marks the hash as existing even when the data is empty, and counts changes (a version).
VERSION_FIELD = "__version__"
# 32 random bytes: 256 bits, far past the 128 bits that make ids unguessable.
ID_BYTES = 32
ID_PATTERN = re.compile(r"^[A-Za-z0-9_-]{43}$")
MAX_KEYS_PER_CHANGE = 1000

_GET = """
local data = redis.call('HGETALL', KEYS[1])
if #data > 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return data
"""

_CREATE = """
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""

# ARGV: ttl, number of fields to remove, the fields to remove, then field/value pairs to set.
# A session that expired or was deleted is not resurrected by a late update.
_UPDATE = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local n_remove = tonumber(ARGV[2])
if n_remove > 0 then redis.call('HDEL', KEYS[1], unpack(ARGV, 3, 2 + n_remove)) end
if #ARGV > 2 + n_remove then redis.call('HSET', KEYS[1], unpack(ARGV, 3 + n_remove)) end
redis.call('HINCRBY', KEYS[1], '__version__', 1)
redis.call('EXPIRE', KEYS[1], ARGV[1])
return redis.call('HGETALL', KEYS[1])
"""

_INCREMENT = """
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local value = redis.call('HINCRBY', KEYS[1], ARGV[2], ARGV[3])
redis.call('HINCRBY', KEYS[1], '__version__', 1)
redis.call('EXPIRE', KEYS[1], ARGV[1])
return value
"""


class SessionNotFound(KeyError):
    """The session does not exist (never created, expired or deleted)."""


def _key(session_id: str) -> str:
    return f"{sessions_settings.KEY_PREFIX}{session_id}"


def _valid_id(session_id: str) -> bool:
    return isinstance(session_id, str) and ID_PATTERN.match(session_id) is not None


def _ttl() -> int:
    return int(sessions_settings.TTL_SECONDS)


def _check_keys(keys: Iterable[str]) -> list[str]:
    keys = list(keys)
    if len(keys) > MAX_KEYS_PER_CHANGE:
        raise ValueError(f"At most {MAX_KEYS_PER_CHANGE} keys per change, got {len(keys)}.")
    for key in keys:
        if not isinstance(key, str) or not key:
            raise ValueError(f"Session keys must be non-empty strings, got {key!r}.")
        if key == VERSION_FIELD:
            raise ValueError(f"{VERSION_FIELD!r} is reserved.")
    return keys


def _encode(data: Mapping[str, Any]) -> list[str]:
    _check_keys(data.keys())
    flat: list[str] = []
    for key, value in data.items():
        flat += [key, json.dumps(value, separators=(",", ":"))]
    return flat


def _decode(raw: list[bytes] | None) -> dict[str, Any] | None:
    if not raw:
        return None
    pairs = iter(raw)
    data = {}
    for field, value in zip(pairs, pairs, strict=True):
        name = field.decode()
        if name != VERSION_FIELD:
            data[name] = json.loads(value)
    return data


def _update_args(changes: Mapping[str, Any], remove: Iterable[str]) -> list[Any]:
    removed = _check_keys(remove)
    return [_ttl(), len(removed), *removed, *_encode(changes)]


class SessionManager:
    """Synchronous sessions on the shared redis-py client (core.redis.redis_client)."""

    @staticmethod
    def _script(name: str) -> Any:
        script = _SCRIPTS[name]
        return lambda keys, args: script(redis_client(), keys=keys, args=args)

    def create_session(self, data: Mapping[str, Any] | None = None) -> str:
        session_id = secrets.token_urlsafe(ID_BYTES)
        args = [_ttl(), VERSION_FIELD, 0, *_encode(data or {})]
        self._script("create")(keys=[_key(session_id)], args=args)
        return session_id

    def get_session(self, session_id: str) -> dict[str, Any] | None:
        if not _valid_id(session_id):
            return None
        return _decode(self._script("get")(keys=[_key(session_id)], args=[_ttl()]))

    def update_session(
        self, session_id: str, changes: Mapping[str, Any], *, remove: Iterable[str] = ()
    ) -> dict[str, Any]:
        """Set `changes` and delete `remove` in one atomic step; returns the session's new data."""
        if not _valid_id(session_id):
            raise SessionNotFound(session_id)
        raw = self._script("update")(keys=[_key(session_id)], args=_update_args(changes, remove))
        if raw is None:
            raise SessionNotFound(session_id)
        return _decode(raw) or {}

    def increment_session(self, session_id: str, key: str, amount: int = 1) -> int:
        """Add `amount` to an integer value atomically (a missing key counts as 0)."""
        if not _valid_id(session_id):
            raise SessionNotFound(session_id)
        _check_keys([key])
        value = self._script("increment")(keys=[_key(session_id)], args=[_ttl(), key, int(amount)])
        if value is None:
            raise SessionNotFound(session_id)
        return int(value)

    def delete_session(self, session_id: str) -> bool:
        if not _valid_id(session_id):
            return False
        return bool(redis_client().delete(_key(session_id)))

    def count_sessions(
        self, *, include_user_sessions: bool = True, deadline: float | None = None, scan_count: int = 1000
    ) -> int:
        """Sessions currently reachable in Redis: these, and Django's user sessions unless
        `include_user_sessions` is False. Stops counting at `deadline` (time.monotonic())."""
        client = redis_client()
        patterns = [f"{sessions_settings.KEY_PREFIX}*"]
        if include_user_sessions:
            from django.contrib.sessions.backends.cache import KEY_PREFIX
            from django.core.cache import caches

            patterns.append(caches[settings.SESSION_CACHE_ALIAS].make_key(f"{KEY_PREFIX}*"))
        count = 0
        for pattern in patterns:
            for _ in client.scan_iter(match=pattern, count=scan_count):
                count += 1
                if deadline is not None and count % scan_count == 0 and time.monotonic() >= deadline:
                    return count
        return count

    def count_reachable(self, *, deadline: float | None = None) -> int:
        """For the recovery and shutdown reports (lifecycle.sessions.steps).

        Counting is a SCAN of Redis's whole keyspace, which grows with the users, and every
        recovery pass and every shutdown asks: so a count is shared by all instances for
        SESSIONS_COUNT_MAX_AGE_SECONDS (a figure in a report, nothing decided on it). A count cut
        short by its deadline is not shared."""
        max_age = sessions_settings.COUNT_MAX_AGE_SECONDS
        client = redis_client()
        if max_age > 0:
            cached = client.get(COUNT_KEY)
            if cached is not None:
                return int(cached)
        count = self.count_sessions(deadline=deadline)
        if max_age > 0 and (deadline is None or time.monotonic() < deadline):
            client.set(COUNT_KEY, count, px=int(max_age * 1000))
        return count

    # The async variant under the same names with an `a` prefix, as Django's own APIs do.
    async def acreate_session(self, data: Mapping[str, Any] | None = None) -> str:
        return await async_session_manager.create_session(data)

    async def aget_session(self, session_id: str) -> dict[str, Any] | None:
        return await async_session_manager.get_session(session_id)

    async def aupdate_session(
        self, session_id: str, changes: Mapping[str, Any], *, remove: Iterable[str] = ()
    ) -> dict[str, Any]:
        return await async_session_manager.update_session(session_id, changes, remove=remove)

    async def aincrement_session(self, session_id: str, key: str, amount: int = 1) -> int:
        return await async_session_manager.increment_session(session_id, key, amount)

    async def adelete_session(self, session_id: str) -> bool:
        return await async_session_manager.delete_session(session_id)


# The writes are durable (core.redis: WAIT for OMK_REDIS_MIN_REPLICAS_ACK replicas); the read
# slides an expiry only.
_SCRIPTS = {
    "get": RedisScript(_GET, durable=False),
    "create": RedisScript(_CREATE),
    "update": RedisScript(_UPDATE),
    "increment": RedisScript(_INCREMENT),
}


def _run_async(name: str, keys: list[str], args: list[Any]) -> Any:
    return _SCRIPTS[name].run_async(async_redis_client(), keys=keys, args=args)


class AsyncSessionManager:
    """The same operations as SessionManager, for async views and workers."""

    async def create_session(self, data: Mapping[str, Any] | None = None) -> str:
        session_id = secrets.token_urlsafe(ID_BYTES)
        await _run_async("create", [_key(session_id)], [_ttl(), VERSION_FIELD, 0, *_encode(data or {})])
        return session_id

    async def get_session(self, session_id: str) -> dict[str, Any] | None:
        if not _valid_id(session_id):
            return None
        return _decode(await _run_async("get", [_key(session_id)], [_ttl()]))

    async def update_session(
        self, session_id: str, changes: Mapping[str, Any], *, remove: Iterable[str] = ()
    ) -> dict[str, Any]:
        if not _valid_id(session_id):
            raise SessionNotFound(session_id)
        raw = await _run_async("update", [_key(session_id)], _update_args(changes, remove))
        if raw is None:
            raise SessionNotFound(session_id)
        return _decode(raw) or {}

    async def increment_session(self, session_id: str, key: str, amount: int = 1) -> int:
        if not _valid_id(session_id):
            raise SessionNotFound(session_id)
        _check_keys([key])
        value = await _run_async("increment", [_key(session_id)], [_ttl(), key, int(amount)])
        if value is None:
            raise SessionNotFound(session_id)
        return int(value)

    async def delete_session(self, session_id: str) -> bool:
        if not _valid_id(session_id):
            return False
        return bool(await async_redis_client().delete(_key(session_id)))


session_manager = SessionManager()
async_session_manager = AsyncSessionManager()

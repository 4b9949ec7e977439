"""Django's cache session engine on django-redis, with one Redis round trip per request.

Three changes from the stock engine, for the sync methods and their async twins alike (`aload`,
`asave`, `aexists`, `acreate`, `adelete`, on core.redis's async client):

- A Redis outage propagates. The stock engine treats a failed read as "no session": during a
  Redis blip the user would be logged out and handed a fresh session. Here the request gets a
  503 with Retry-After instead; the session is intact when Redis answers again.
- The sliding expiry (SESSION_SAVE_EVERY_REQUEST) costs no extra round trips. The stock engine
  reads the session (GET), then on the way out checks it still exists (GET) and writes it back
  (SET): three round trips on every request, most of them for a session nobody changed. Here the
  read is one script that slides the expiry as it reads, so an unchanged session needs no write
  at all (the middleware still re-sends the cookie with a fresh max-age); a changed one is
  written by one script with SET ... XX (only if it still exists: a session deleted meanwhile,
  e.g. by a logout elsewhere, is not resurrected, as the stock GET check ensures).
- The read keeps a session's own expiry. A session given one (`set_expiry(60)`, or a date) has
  a mark beside it in Redis saying so: the read slides such a session by its own inactivity
  period, or leaves a fixed date alone, and only a session without a mark is pushed a full
  SESSION_COOKIE_AGE. (Without the mark a read, or a request ending in a 500, which is not
  saved, would stretch a 60-second session to an hour.)
"""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, Any

from django.conf import settings
from django.contrib.sessions.backends.base import CreateError, UpdateError
from django.contrib.sessions.backends.cache import SessionStore as CacheSessionStore

from core.redis import RedisScript, async_redis_client

# The mark of a session's own expiry is under another prefix than the sessions, so that what
# counts sessions (lifecycle.sessions.manager.count_sessions) does not count marks.
EXPIRY_KEY_PREFIX = "lifecycle.sessions.expiry:"
FIXED = "fixed"

# KEYS: session, its expiry mark. ARGV: SESSION_COOKIE_AGE. Returns {data, mark} ('' without a
# mark), or false when there is no session.
_LOAD = """
local data = redis.call('GET', KEYS[1])
if not data then return false end
local own = redis.call('GET', KEYS[2])
if not own then
  redis.call('EXPIRE', KEYS[1], ARGV[1])
  return {data, ''}
end
if own ~= 'fixed' then
  redis.call('EXPIRE', KEYS[1], own)
  redis.call('EXPIRE', KEYS[2], own)
end
return {data, own}
"""
_load = RedisScript(_LOAD, durable=False)  # sliding an expiry loses nothing acknowledged

# KEYS: session, its expiry mark. ARGV: data, ttl (s), mark ('' for the default expiry), NX
# (create) or XX (update). Returns 1, or 0 when NX found a session or XX found none.
_SAVE = """
if not redis.call('SET', KEYS[1], ARGV[1], ARGV[4], 'EX', ARGV[2]) then return 0 end
if ARGV[3] == '' then
  redis.call('DEL', KEYS[2])
else
  redis.call('SET', KEYS[2], ARGV[3], 'EX', ARGV[2])
end
return 1
"""
_save = RedisScript(_SAVE)


def _own_expiry(expiry: Any) -> str:
    """The mark of `_session_expiry`: '' for the default, seconds of inactivity, or FIXED."""
    if not expiry:  # None, or 0 (until the browser closes: the default lifetime in Redis)
        return ""
    if isinstance(expiry, (str, datetime)):
        return FIXED
    return str(int(expiry))


class SessionStore(CacheSessionStore):
    # The mark the read found ('' for none); None when this store did not read the session.
    _loaded_mark: str | None = None

    if TYPE_CHECKING:  # Django's, missing from its stubs
        _cache: Any

        def _get_or_create_session_key(self) -> str: ...
        def _get_session(self, no_load: bool = False) -> dict[str, Any]: ...
        async def _aget_or_create_session_key(self) -> str: ...
        async def _aget_session(self, no_load: bool = False) -> dict[str, Any]: ...

    @property
    def _client(self) -> Any:
        return self._cache.client  # django-redis DefaultClient: key names and encoding

    def _keys(self, session_key: str) -> list[str]:
        client = self._client
        return [
            client.make_key(self.cache_key_prefix + session_key),
            client.make_key(EXPIRY_KEY_PREFIX + session_key),
        ]

    def _redis(self) -> Any:
        return self._client.get_client(write=True)

    def _loaded(self, reply: Any) -> dict[str, Any]:
        session_data = None
        if reply:
            raw, mark = reply
            try:
                session_data = self._client.decode(raw)
            except Exception:
                # Not JSON (a session pickled by an older release, another SECRET_KEY, or
                # garbage): never unpickled, the visitor starts a fresh session (logged out once).
                session_data = None
            self._loaded_mark = mark.decode() if isinstance(mark, bytes) else mark
        if session_data is not None:
            return session_data
        self._session_key = None
        return {}

    def _save_args(self, data: dict[str, Any], must_create: bool, expiry_age: int) -> list[Any] | None:
        """The _SAVE arguments, or None when the read already left nothing to write."""
        mark = _own_expiry(data.get("_session_expiry"))
        if not must_create and not self.modified and self._loaded_mark == mark:
            return None
        # A date already past: the session ends now (a TTL must be positive).
        return [self._client.encode(data), max(1, expiry_age), mark, "NX" if must_create else "XX"]

    @staticmethod
    def _written(written: Any, must_create: bool) -> None:
        if not written:
            raise CreateError if must_create else UpdateError

    # --- sync -----------------------------------------------------------------------------------

    def load(self) -> dict[str, Any]:
        keys = self._keys(self._get_or_create_session_key())
        return self._loaded(_load(self._redis(), keys=keys, args=[settings.SESSION_COOKIE_AGE]))

    def save(self, must_create: bool = False) -> None:
        session_key = self.session_key
        if session_key is None:
            return self.create()
        data = self._get_session(no_load=must_create)
        args = self._save_args(data, must_create, self.get_expiry_age())
        if args is None:
            return None
        self._written(_save(self._redis(), keys=self._keys(session_key), args=args), must_create)
        return None

    def exists(self, session_key: str | None) -> bool:
        return bool(session_key and self._redis().exists(self._keys(session_key)[0]))

    def delete(self, session_key: str | None = None) -> None:
        session_key = session_key or self.session_key
        if session_key is None:
            return
        self._redis().delete(*self._keys(session_key))

    # --- async: the same scripts on the event loop's client -------------------------------------

    async def aload(self) -> dict[str, Any]:
        keys = self._keys(await self._aget_or_create_session_key())
        return self._loaded(await _load.run_async(async_redis_client(), keys=keys, args=[settings.SESSION_COOKIE_AGE]))

    async def asave(self, must_create: bool = False) -> None:
        session_key = self.session_key
        if session_key is None:
            return await self.acreate()
        data = await self._aget_session(no_load=must_create)
        args = self._save_args(data, must_create, await self.aget_expiry_age())
        if args is None:
            return None
        written = await _save.run_async(async_redis_client(), keys=self._keys(session_key), args=args)
        self._written(written, must_create)
        return None

    async def aexists(self, session_key: str | None) -> bool:
        return bool(session_key and await async_redis_client().exists(self._keys(session_key)[0]))

    async def adelete(self, session_key: str | None = None) -> None:
        session_key = session_key or self.session_key
        if session_key is None:
            return
        await async_redis_client().delete(*self._keys(session_key))

"""Django's cache session engine on django-redis, with one Redis round trip per request.

Two changes from the stock engine:

- A Redis outage propagates. The stock engine treats a failed read as "no session": during a
  Redis blip the user would be logged out and handed a fresh session. Here the request gets a
  503 with Retry-After instead; the session is intact when Redis answers again.
- The sliding expiry (SESSION_SAVE_EVERY_REQUEST) costs no extra round trips. The stock engine
  reads the session (GET), then on the way out checks it still exists (GET) and writes it back
  (SET): three round trips on every request, most of them for a session nobody changed. Here the
  read is a GETEX that pushes the expiry a full SESSION_COOKIE_AGE ahead as it reads, so an
  unchanged session needs no write at all (the middleware still re-sends the cookie with a fresh
  max-age); a changed one is written with one SET ... XX (only if it still exists: a session
  deleted meanwhile, e.g. by a logout elsewhere, is not resurrected, as the stock GET check
  ensures).
"""

from django.conf import settings
from django.contrib.sessions.backends.base import UpdateError
from django.contrib.sessions.backends.cache import SessionStore as CacheSessionStore

from core.dependencies import unavailable_dependency


class SessionStore(CacheSessionStore):
    # Set by load() when its GETEX already gave the key SESSION_COOKIE_AGE: an unmodified
    # session with the default expiry then has nothing left to write.
    _expiry_refreshed = False

    def _redis(self):
        client = self._cache.client  # django-redis DefaultClient
        return client, client.get_client(write=True)

    def load(self):
        client, redis = self._redis()
        try:
            raw = redis.getex(client.make_key(self.cache_key), ex=settings.SESSION_COOKIE_AGE)
            session_data = None if raw is None else client.decode(raw)
        except Exception as exc:
            if unavailable_dependency(exc) is not None:
                raise
            # Not JSON (a session pickled by an older release, or garbage): never unpickled,
            # the visitor starts a fresh session (logged out once).
            session_data = None
        if session_data is not None:
            self._expiry_refreshed = True
            return session_data
        self._session_key = None
        return {}

    def save(self, must_create=False):
        if self.session_key is None:
            return self.create()
        if must_create:
            return super().save(must_create=True)  # SET NX, as the stock engine
        custom_expiry = "_session_expiry" in (self._session_cache if hasattr(self, "_session_cache") else {})
        if not self.modified and self._expiry_refreshed and not custom_expiry:
            return
        client, redis = self._redis()
        key = client.make_key(self.cache_key)
        if not self.modified:
            # Loaded elsewhere or a custom expiry (set_expiry): slide the TTL only.
            if not redis.expire(key, self.get_expiry_age()):
                raise UpdateError
            return
        written = redis.set(key, client.encode(self._get_session()), ex=self.get_expiry_age(), xx=True)
        if not written:
            raise UpdateError

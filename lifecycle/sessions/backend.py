"""Django's cache session engine, minus its habit of hiding a Redis outage.

The stock engine treats a failed read as "no session": during a Redis blip the user would be
logged out and handed a fresh session. Here the failure propagates, and the request gets a 503
with Retry-After instead; the session is intact when Redis answers again.
"""

from django.contrib.sessions.backends.cache import SessionStore as CacheSessionStore

from lifecycle.errors import unavailable_dependency


class SessionStore(CacheSessionStore):
    def load(self):
        try:
            session_data = self._cache.get(self.cache_key)
        except Exception as exc:
            if unavailable_dependency(exc) is not None:
                raise
            session_data = None
        if session_data is not None:
            return session_data
        self._session_key = None
        return {}

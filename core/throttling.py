"""API throttling: django-ninja's throttles with their state in Redis, shared by every instance.

ninja's own throttles keep a list of timestamps in the cache with a read-modify-write: two
instances counting at once each write their own list and one count is lost. Here each window is
one Redis counter, incremented and given its expiry in one Lua script (atomic, one round trip):
whatever the number of instances and threads, a window admits exactly `rate` requests.

Fixed windows starting at a key's first request: a client may get up to twice the rate across a
window boundary, which is what the rate is for (capacity and abuse), not a quota.

On a Redis outage the throttle lets requests through (fail open) and counts it: the API's other
limits (body size, the login lockout, which fails closed) still hold, and governance endpoints
that need only PostgreSQL keep working while Redis restarts. See docs/security.md.
"""

from __future__ import annotations

import logging
import threading

from django.http import HttpRequest
from ninja.throttling import BaseThrottle, SimpleRateThrottle
from prometheus_client import Counter

from core.clients import client_ip
from core.conf import core_settings
from core.dependencies import unavailable_dependency
from core.redis import redis_client

logger = logging.getLogger(__name__)

THROTTLE_DECISIONS = Counter(
    "api_throttle_decisions",
    "API throttle decisions by scope and result: allowed, throttled, or unchecked (Redis unreachable).",
    ["scope", "result"],
)

# KEYS: the window's counter. ARGV: window length (ms), requests allowed. Returns -1 when the
# request is allowed, else the milliseconds until the window ends.
_HIT = """
local n = redis.call('INCR', KEYS[1])
if n == 1 or redis.call('PTTL', KEYS[1]) < 0 then redis.call('PEXPIRE', KEYS[1], ARGV[1]) end
if n > tonumber(ARGV[2]) then return redis.call('PTTL', KEYS[1]) end
return -1
"""

READ_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


class RedisRateThrottle(SimpleRateThrottle):
    """A ninja throttle counting in Redis. Subclasses say whom a request counts against
    (`ident`, None: not throttled here) and which setting holds the rate."""

    scope = "api"
    setting = ""

    def __init__(self) -> None:
        # The rate is read per request (core_settings), so settings changes apply at once.
        self.rate = None
        self.num_requests, self.duration = None, None
        # One throttle object serves every thread of the process: the wait is per request.
        self._local = threading.local()

    def ident(self, request: HttpRequest) -> str | None:
        raise NotImplementedError

    def allow_request(self, request: HttpRequest) -> bool:
        ident = self.ident(request)
        if ident is None:
            return True
        limit, seconds = self.parse_rate(getattr(core_settings, self.setting))
        if limit is None or seconds is None:
            return True
        key = f"{core_settings.THROTTLE_KEY_PREFIX}{self.scope}:{ident}"
        client = redis_client()
        try:
            wait_ms = client.register_script(_HIT)(keys=[key], args=[seconds * 1000, limit], client=client)
        except Exception as exc:
            if unavailable_dependency(exc) is None:
                raise
            THROTTLE_DECISIONS.labels(scope=self.scope, result="unchecked").inc()
            logger.warning("API throttle %s unchecked: Redis unreachable", self.scope)
            return True
        if int(wait_ms) < 0:
            THROTTLE_DECISIONS.labels(scope=self.scope, result="allowed").inc()
            return True
        THROTTLE_DECISIONS.labels(scope=self.scope, result="throttled").inc()
        self._local.wait = max(int(wait_ms), 1) / 1000
        return False

    def wait(self) -> float | None:
        return getattr(self._local, "wait", None)


class UserThrottle(RedisRateThrottle):
    """Per user (all of a user's tokens and sessions together: issuing more tokens buys no more
    rate) and endpoint class: reads and writes each have their own window, so a client's burst
    of writes does not lock it out of reading."""

    scope = "user"
    setting = "API_THROTTLE_USER"

    def ident(self, request: HttpRequest) -> str | None:
        user = getattr(request, "auth", None)
        if user is None or not getattr(user, "pk", None):
            return None
        kind = "read" if request.method in READ_METHODS else "write"
        return f"{user.pk}:{kind}"


class AnonThrottle(RedisRateThrottle):
    """Per client address, for operations without a user (the login)."""

    scope = "anon"
    setting = "API_THROTTLE_ANON"

    def ident(self, request: HttpRequest) -> str | None:
        if getattr(request, "auth", None) is not None:
            return None
        return client_ip(request)


def api_throttles() -> list[BaseThrottle]:
    return [UserThrottle(), AnonThrottle()]

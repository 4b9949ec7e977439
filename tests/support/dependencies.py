"""Helpers of the dependency-failure tests (tests/core/test_dependencies_*.py and the Sentinel
tests): the exception a call raises, the service pointed at another Redis or at Sentinels."""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from redis.backoff import NoBackoff
from redis.retry import Retry

from settings.sentinel import sentinel_cache


def raised(call: Callable[[], Any]) -> BaseException:
    """The exception `call` raises (an AssertionError if it returns)."""
    try:
        call()
    except Exception as exc:
        return exc
    raise AssertionError("the call succeeded")


def use_sentinels(settings, sentinels: list[tuple[str, int]], master: str) -> None:
    """Point the service's Redis clients at the primary the Sentinels name, as REDIS_SENTINELS
    and REDIS_SENTINEL_MASTER do (settings/sentinel.py)."""
    location, options = sentinel_cache("redis://ignored/0", sentinels, master, settings.REDIS_SOCKET_TIMEOUT)
    use_redis(settings, location, **options)


def use_redis(settings, url: str, *, retries: bool = True, **options: Any) -> None:
    """Point the service's Redis clients (cache, sessions, lock, queues...) at `url` for this test.

    `retries=False` drops the configured retry policy; `options` are set in the cache's OPTIONS.
    """
    caches = copy.deepcopy(settings.CACHES)
    caches["default"]["LOCATION"] = url
    caches["default"]["OPTIONS"].update(options)
    if not retries:
        caches["default"]["OPTIONS"]["CONNECTION_POOL_KWARGS"]["retry"] = Retry(NoBackoff(), 0)
    settings.CACHES = caches

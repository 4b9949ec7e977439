"""The one Redis client of the service: django-redis's pool, shared by cache and lifecycle."""

import asyncio
import weakref

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django_redis import get_redis_connection
from redis import Redis
from redis.asyncio import Redis as AsyncRedis


def redis_client() -> Redis:
    return get_redis_connection("default")


# redis.asyncio connections belong to the event loop that opened them, so each loop gets its own
# client, built from the same settings as django-redis's pool (URL, timeouts, pool options).
_async_clients: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, AsyncRedis] = weakref.WeakKeyDictionary()


def async_redis_client() -> AsyncRedis:
    """The asyncio twin of `redis_client()` for the running event loop."""
    loop = asyncio.get_running_loop()
    client = _async_clients.get(loop)
    if client is None:
        client = _async_clients[loop] = build_async_redis_client()
    return client


@receiver(setting_changed)
def _settings_changed(*, setting: str, **kwargs: object) -> None:
    if setting == "CACHES":
        _async_clients.clear()


def build_async_redis_client() -> AsyncRedis:
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.retry import Retry

    cache = settings.CACHES["default"]
    location = cache["LOCATION"]
    if isinstance(location, list | tuple):
        location = location[0]  # django-redis: the first server is the primary
    if "," in location:
        location = location.split(",", 1)[0]
    options = cache.get("OPTIONS", {})
    kwargs = dict(options.get("CONNECTION_POOL_KWARGS", {}))
    retry = kwargs.get("retry")
    if isinstance(retry, Retry):
        # The sync Retry sleeps with time.sleep; asyncio needs its own class with the same policy.
        kwargs["retry"] = AsyncRetry(retry._backoff, retry.get_retries())
    for option, kwarg in (("SOCKET_CONNECT_TIMEOUT", "socket_connect_timeout"), ("SOCKET_TIMEOUT", "socket_timeout")):
        if option in options:
            kwargs.setdefault(kwarg, options[option])
    if options.get("PASSWORD"):
        kwargs.setdefault("password", options["PASSWORD"])
    return AsyncRedis.from_url(location, **kwargs)

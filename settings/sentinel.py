"""The cache entry of a Redis behind Sentinel (REDIS_SENTINELS), for settings/base.py."""

from typing import Any
from urllib.parse import urlparse

from redis.backoff import NoBackoff
from redis.retry import Retry


def sentinel_cache(
    url: str, sentinels: list[tuple[str, int]], master: str, socket_timeout: float
) -> tuple[str, dict[str, Any]]:
    """LOCATION and the OPTIONS to add, for django-redis's SentinelConnectionFactory with DefaultClient.

    DefaultClient, not django-redis's SentinelClient: that one reads from replicas, and a read
    from a replica may miss a write just acknowledged (a session just saved). Every command goes
    to the primary; `url` gives the database number and the password.
    """
    parsed = urlparse(url)
    credentials = parsed.netloc.rpartition("@")[0]
    location = f"redis://{credentials + '@' if credentials else ''}{master}/{parsed.path.strip('/') or '0'}"
    return location, {
        "CONNECTION_FACTORY": "django_redis.pool.SentinelConnectionFactory",
        # redis-py's Sentinel pool with connections closed when a reply is not read in time (a
        # later command would read the late reply otherwise): core/redis.py.
        "CONNECTION_POOL_CLASS": "core.redis.SentinelPool",
        "SENTINELS": sentinels,
        # Asking the Sentinels: one attempt each, briefly (a dead one is skipped, the next asked).
        "SENTINEL_KWARGS": {
            "socket_timeout": min(socket_timeout, 0.5),
            "socket_connect_timeout": min(socket_timeout, 0.5),
            "retry": Retry(NoBackoff(), 0),
        },
    }

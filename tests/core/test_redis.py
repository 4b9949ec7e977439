"""The Redis clients' retry policy: a refused or reset connection is retried, a timeout is not
(on a path that drops packets, redis-py's nested retries would multiply the wait)."""

import asyncio
import socket
import time

import pytest
import redis
from redis.exceptions import ConnectionError as RedisConnectionError

from core.redis import build_async_redis_client, build_redis_client
from tests.support.dependencies import use_redis


@pytest.fixture
def silent_server():
    """Accepts connections (the kernel's backlog does) and never answers a byte."""
    with socket.create_server(("127.0.0.1", 0)) as server:
        yield server.getsockname()[1]


def test_build_redis_client__a_timeout_is_not_retried(settings, silent_server):
    use_redis(settings, f"redis://127.0.0.1:{silent_server}/0")
    client = build_redis_client()
    started = time.monotonic()
    with pytest.raises(redis.TimeoutError):
        client.set("k", "v")
    took = time.monotonic() - started
    # One socket timeout (2 s); retried, it would be 4 of them and their health checks.
    assert took < settings.REDIS_SOCKET_TIMEOUT * 1.5, f"{took:.1f} s"


def test_build_async_redis_client__same_retry_policy_as_the_sync_clients(settings, silent_server):
    # Pins redis-py's private Retry attributes that core/redis.py copies into the asyncio Retry.
    sync_retry = build_redis_client().connection_pool.connection_kwargs["retry"]
    assert sync_retry._supported_errors == (RedisConnectionError,)
    use_redis(settings, f"redis://127.0.0.1:{silent_server}/0")

    async def call() -> float:
        client = build_async_redis_client()
        retry = client.connection_pool.connection_kwargs["retry"]
        assert retry.get_retries() == sync_retry.get_retries() == 3
        assert type(retry._backoff) is type(sync_retry._backoff)
        assert set(retry._supported_errors) == {RedisConnectionError}
        started = time.monotonic()
        with pytest.raises(redis.TimeoutError):
            await client.set("k", "v")
        await client.aclose()
        return time.monotonic() - started

    assert asyncio.run(call()) < settings.REDIS_SOCKET_TIMEOUT * 1.5

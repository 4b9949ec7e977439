"""The service's Redis clients, all built from one description: `settings.CACHES["default"]`.

- `redis_client()`: django-redis's pool, shared by the cache, the sessions, the lock, queues,
  the board and the registry of the workers.
- `async_redis_client()`: its asyncio twin for the running event loop (async session methods,
  the async lock, `async_session_manager`).
- `build_redis_client()`: a sync client with a pool of its own, for the gunicorn master's
  heartbeat (which must not share a pool with the workers it forks).

Each honours the same location (REDIS_URL, or REDIS_SENTINELS and REDIS_SENTINEL_MASTER: the
primary is asked of the Sentinels, and asked again when it stops answering or answers
READONLY), password, timeouts, pool options and retry policy.

`RedisScript` runs a Lua script on a sync or an async client; a durable one is a write whose
loss would lose acknowledged data: with OMK_REDIS_MIN_REPLICAS_ACK > 0 it is followed, on the
same connection and in the same round trip, by `WAIT n timeout`, and too few replicas in time raise `ReplicaAckTimeout`
(a 503: the client retries, with its Idempotency-Key one effect). Redis replicates
asynchronously: without the WAIT an acknowledged write can vanish with a primary that dies
before its replica has it. `replicated` does the same for one command that hands out data a
reader must not be given before a replica has it (a queue claim).
"""

from __future__ import annotations

import asyncio
import hashlib
import weakref
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import urlparse

from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django_redis import get_redis_connection
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import NoScriptError, ReadOnlyError, RedisError, ResponseError
from redis.sentinel import (
    MasterNotFoundError,
    SentinelConnectionPool,
    SentinelManagedConnection,
    SentinelManagedSSLConnection,
)

from core.conf import core_settings
from core.dependencies import ReplicaAckTimeout


def redis_client() -> Redis:
    return get_redis_connection("default")


def redis_text(reply: object) -> str:
    """A string reply of `redis_client()` (a key, a member, a stream id) as text.

    The client answers bytes (django-redis leaves decode_responses off); redis-py types its
    replies for either setting (bytes | str), and some for every shape the command can answer.
    """
    if isinstance(reply, bytes):
        return reply.decode()
    if isinstance(reply, str):
        return reply
    raise TypeError(f"Expected a Redis string reply, got {type(reply).__name__}.")


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


class SentinelConnection(SentinelManagedConnection):
    """A Sentinel-managed connection bounded as the plain ones are. It is closed when reading a
    reply fails, as redis-py's
    plain connections are: its `read_response` defaults to `disconnect_on_error=False` (redis-py
    8.1, pinned by tests/core/test_redis_sentinel.py), and with timeouts not retried (settings/
    base.py: the retry's failure callback, which closes the connection, never runs for them) a
    connection whose command timed out went back to the pool with that command's reply still on
    its way: the next command read it (a throttle's EVALSHA answered another command's `OK`)."""

    def read_response(
        self, disable_decoding: bool = False, *, disconnect_on_error: bool | None = True, **kwargs: Any
    ) -> Any:
        return super().read_response(disable_decoding, disconnect_on_error=disconnect_on_error, **kwargs)

    def connect(self) -> None:
        """Asking the Sentinels for the primary is not retried: one attempt already asks each of
        them in turn (on a path that drops packets, a timeout each), and redis-py retried it
        (MasterNotFoundError is a ConnectionError), inside the command's own retries: a call on
        a partitioned instance took over 15 s. A primary the Sentinels call down is a failover
        in progress: a 503 and the client's retry. (`_connect_retry` is redis-py's own step,
        pinned by tests/core/test_redis_sentinel.py.)"""
        self.retry.call_with_retry(self._connect_retry, lambda error: None, is_retryable=_not_master_not_found)


def _not_master_not_found(error: Exception) -> bool:
    return not isinstance(error, MasterNotFoundError)


class SentinelSSLConnection(SentinelConnection, SentinelManagedSSLConnection):
    pass


class SentinelPool(SentinelConnectionPool):
    """redis-py's pool of connections to the primary the Sentinels name, with `SentinelConnection`:
    django-redis's CONNECTION_POOL_CLASS (settings/sentinel.py) and `build_redis_client()`'s."""

    def __init__(self, service_name: str, sentinel_manager: Any, **kwargs: Any):
        # As redis-py's own pool picks its class (and takes `ssl` out of the connections' kwargs).
        ssl = kwargs.pop("ssl", False)
        kwargs.setdefault("connection_class", SentinelSSLConnection if ssl else SentinelConnection)
        super().__init__(service_name, sentinel_manager, **kwargs)


def _description() -> tuple[str, dict[str, Any], dict[str, Any]]:
    """(location, connection kwargs, cache OPTIONS) of the default cache, as django-redis reads them."""
    cache: dict[str, Any] = settings.CACHES["default"]
    location = cache["LOCATION"]
    if isinstance(location, list | tuple):
        location = location[0]  # django-redis: the first server is the primary
    if "," in location:
        location = location.split(",", 1)[0]
    options = cache.get("OPTIONS", {})
    kwargs = dict(options.get("CONNECTION_POOL_KWARGS", {}))
    for option, kwarg in (("SOCKET_CONNECT_TIMEOUT", "socket_connect_timeout"), ("SOCKET_TIMEOUT", "socket_timeout")):
        if option in options:
            kwargs.setdefault(kwarg, options[option])
    if options.get("PASSWORD"):
        kwargs.setdefault("password", options["PASSWORD"])
    return location, kwargs, options


def _sentinel_target(location: str, kwargs: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """The monitored primary's name and the connection kwargs, from a redis://<name>/<db> location."""
    parsed = urlparse(location)
    target = dict(kwargs, db=int(parsed.path.strip("/") or 0))
    if parsed.password:
        target.setdefault("password", parsed.password)
    if parsed.username:
        target.setdefault("username", parsed.username)
    return parsed.hostname or "", target


def build_redis_client() -> Redis:
    """A new sync client on a pool of its own, from the same description as `redis_client()`."""
    location, kwargs, options = _description()
    if options.get("SENTINELS"):
        from redis.sentinel import Sentinel

        service, target = _sentinel_target(location, kwargs)
        sentinel = Sentinel(options["SENTINELS"], sentinel_kwargs=options.get("SENTINEL_KWARGS"), **target)
        return sentinel.master_for(service, connection_pool_class=SentinelPool)
    return Redis.from_url(location, **kwargs)


def build_async_redis_client() -> AsyncRedis:
    from redis.asyncio.retry import Retry as AsyncRetry
    from redis.retry import Retry

    def for_asyncio(values: dict[str, Any]) -> dict[str, Any]:
        values = dict(values)
        retry = values.get("retry")
        if isinstance(retry, Retry):
            # The sync Retry sleeps with time.sleep; asyncio needs its own class with the same policy.
            # (Private attributes, pinned by tests/core/test_redis.py.) The sync Retry is typed
            # for any exception, the asyncio one for Redis errors: the settings give Redis errors.
            errors = tuple(e for e in retry._supported_errors if issubclass(e, RedisError))
            values["retry"] = AsyncRetry(retry._backoff, retry.get_retries(), errors)
        return values

    location, kwargs, options = _description()
    kwargs = for_asyncio(kwargs)
    if options.get("SENTINELS"):
        from redis.asyncio.sentinel import Sentinel as AsyncSentinel

        service, target = _sentinel_target(location, kwargs)
        sentinel_kwargs = options.get("SENTINEL_KWARGS")
        sentinel = AsyncSentinel(
            options["SENTINELS"],
            sentinel_kwargs=None if sentinel_kwargs is None else for_asyncio(sentinel_kwargs),
            **target,
        )
        return sentinel.master_for(service)
    return AsyncRedis.from_url(location, **kwargs)


# How a replica refuses WAIT.
WAIT_ON_REPLICA = "WAIT cannot be used with replica instances"


def replicas_to_ack() -> int:
    return max(0, core_settings.REDIS_MIN_REPLICAS_ACK)


def _wait(need: int) -> tuple[Any, ...]:
    return ("WAIT", need, int(core_settings.REDIS_REPLICAS_ACK_TIMEOUT * 1000))


class RedisScript:
    """A Lua script: EVALSHA (EVAL when Redis lacks it: restarted, failed over). `durable` (the
    default) when it writes acknowledged data: then, with OMK_REDIS_MIN_REPLICAS_ACK, WAIT on the
    same connection follows it, one round trip for both."""

    def __init__(self, source: str, *, durable: bool = True) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()
        self.durable = durable

    def _commands(self, keys: Sequence[Any], args: Sequence[Any], *, loaded: bool) -> list[tuple[Any, ...]]:
        head = ("EVALSHA", self.sha) if loaded else ("EVAL", self.source)
        commands: list[tuple[Any, ...]] = [(*head, len(keys), *keys, *args)]
        need = replicas_to_ack() if self.durable else 0
        if need:
            commands.append(_wait(need))
        return commands

    @staticmethod
    def _result(replies: list[Any]) -> Any:
        reply = replies[0]
        if isinstance(reply, Exception):
            raise reply
        if len(replies) > 1:
            _require_replicas(replies[1], need=replicas_to_ack())
        return reply

    def __call__(self, client: Redis, *, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        replies = self._send(client, self._commands(keys, args, loaded=True))
        if isinstance(replies[0], NoScriptError):  # Redis restarted or failed over: send the source
            replies = self._send(client, self._commands(keys, args, loaded=False))
        return self._result(replies)

    async def run_async(self, client: AsyncRedis, *, keys: Sequence[Any], args: Sequence[Any]) -> Any:
        replies = await self._send_async(client, self._commands(keys, args, loaded=True))
        if isinstance(replies[0], NoScriptError):
            replies = await self._send_async(client, self._commands(keys, args, loaded=False))
        return self._result(replies)

    @staticmethod
    def _send(client: Redis, commands: list[tuple[Any, ...]]) -> list[Any]:
        if len(commands) == 1:  # no WAIT: a plain command
            try:
                return [client.execute_command(*commands[0])]
            except NoScriptError as exc:
                return [exc]
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return pipe.execute(raise_on_error=False)

    @staticmethod
    async def _send_async(client: AsyncRedis, commands: list[tuple[Any, ...]]) -> list[Any]:
        if len(commands) == 1:
            try:
                return [await client.execute_command(*commands[0])]
            except NoScriptError as exc:
                return [exc]
        pipe = client.pipeline(transaction=False)
        for command in commands:
            pipe.execute_command(*command)
        return await pipe.execute(raise_on_error=False)


def _require_replicas(acked: Any, *, need: int) -> None:
    if isinstance(acked, ResponseError) and str(acked).startswith(WAIT_ON_REPLICA):
        # The server was demoted under us (a failover): the write, or the read a script did
        # where its mark was found, went to a replica. What READONLY says, so treated alike.
        raise ReadOnlyError(str(acked)) from acked
    if isinstance(acked, Exception):
        raise acked
    if acked < need:
        raise ReplicaAckTimeout(
            f"{acked} of the {need} Redis replicas required acknowledged the write within "
            f"{core_settings.REDIS_REPLICAS_ACK_TIMEOUT} s"
        )


def replicated(client: Redis, command: Callable[[Redis], object], *, hands_out: Callable[[Any], bool] = bool) -> Any:
    """The reply of one redis-py command (`command` sends it on the client it is given) that
    hands out data, answered only once that data is on the replicas: with
    OMK_REDIS_MIN_REPLICAS_ACK, `command` is given a pipeline and WAIT follows it on the same
    connection, in the same round trip; without, it runs on `client` as a plain command.

    A reader sees a write as soon as the primary has it, before any replica does. A queue claim
    that delivered a message whose publish was refused (its WAIT timed out) would hand the
    consumer a message a failover can take back, and that the publisher's retry then adds again
    under another id: delivered twice. Replication is ordered, so a replica that acknowledged
    the claim has every write before it, each delivered message's publish included. A reply
    that hands out nothing (`hands_out(reply)` false: an empty claim) needs no replica."""
    need = replicas_to_ack()
    if not need:
        return command(client)
    pipe = client.pipeline(transaction=False)
    command(pipe)
    pipe.execute_command(*_wait(need))
    replies = pipe.execute(raise_on_error=False)
    if isinstance(replies[0], Exception):
        raise replies[0]
    if hands_out(replies[0]):
        _require_replicas(replies[1], need=need)
    return replies[0]

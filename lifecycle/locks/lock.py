"""A Redis lock with fencing tokens, fair FIFO hand-off and no polling, for sync and async code.

Safety does not rest on the lease alone: a holder can stall (GC, CPU throttling, SIGSTOP) past its
TTL while another process takes the lock. Each grant therefore carries a fence, strictly
increasing per lock name, which the protected resource compares with the highest fence it has
accepted (see governance.services): a stale holder's write is refused where the data lives.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import hashlib
import inspect
import logging
import os
import threading
import time
from collections.abc import Callable
from typing import Any, TypeVar, cast

from django.core.signals import setting_changed
from django.dispatch import receiver
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.exceptions import NoScriptError

from core.dependencies import REDIS_UNAVAILABLE_ERRORS
from core.errors import Busy
from lifecycle.locks import lua
from lifecycle.locks.conf import LocksSettings, locks_settings
from lifecycle.locks.metrics import (
    LOCK_CONTENTION,
    LOCK_HELD,
    LOCK_WAIT,
    LOCKS_ACQUIRED,
    LOCKS_LOST,
    LOCKS_TIMEOUT,
    LOCKS_UNAVAILABLE,
    inc,
    metric_label,
    observe,
)

logger = logging.getLogger(__name__)

# READONLY, LOADING, MASTERDOWN... mid-failover are as unreachable as down (core.dependencies).
_UNREACHABLE = REDIS_UNAVAILABLE_ERRORS
F = TypeVar("F", bound=Callable[..., Any])


class LockError(Exception):
    """Base of the lock's errors."""


class LockTimeout(LockError, Busy):
    """The lock stayed held by others for the whole `timeout`."""


class LockLost(LockError):
    """The lease expired (or could not be renewed) before release: another holder may have it."""


class LockReleased(LockError):
    """`extend()` of a lease its holder already released: a bug in the caller, not a lost lock
    (nothing is sent to Redis, logged as lost or counted in locks_lost_total)."""


class LockUnavailable(LockError):
    """Redis is unreachable: no lock is granted (fail closed). Chained to the Redis error, so the
    middleware answers 503 with Retry-After."""


class _Config:
    """The lock settings, read once: Django's settings lookups would cost more than Redis's work."""

    def __init__(self) -> None:
        self.ttl = locks_settings.TTL
        self.timeout = locks_settings.TIMEOUT
        self.prefix = locks_settings.KEY_PREFIX
        self.max_block = locks_settings.MAX_BLOCK
        self.fair_after_ms = int(locks_settings.FAIR_AFTER * 1000)


_config: _Config | None = None
# Lock names this process recently had to wait for (insertion-ordered dict used as a set).
_recently_contended: dict[str, None] = {}
_shared_client: Redis | None = None


def _conf() -> _Config:
    global _config
    if _config is None:
        _config = _Config()
    return _config


@receiver(setting_changed)
def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    global _config, _shared_client
    if setting.startswith(LocksSettings.prefix) or setting == "CACHES":
        _config = None
        _shared_client = None


def _round_trip(client: Redis, *commands: tuple[Any, ...]) -> list[Any]:
    """Send `commands` in one write on a pooled connection and read their replies: redis-py's
    non-transactional pipeline. It reads every reply before it raises the first error reply, so
    the connection goes back to the pool clean, and retries connection errors by the
    connection's own policy, as the client does for one command.
    """
    pipe = client.pipeline(transaction=False)
    for command in commands:
        pipe.execute_command(*command)
    return pipe.execute()


class _Script:
    def __init__(self, source: str) -> None:
        self.source = source
        self.sha = hashlib.sha1(source.encode()).hexdigest()

    def args(self, keys: list[str], argv: list[Any]) -> tuple[Any, ...]:
        return ("EVALSHA", self.sha, len(keys), *keys, *argv)

    def __call__(self, client: Redis, keys: list[str], argv: list[Any]) -> Any:
        try:
            return _round_trip(client, self.args(keys, argv))[0]
        except NoScriptError:
            return _round_trip(client, ("EVAL", self.source, len(keys), *keys, *argv))[0]

    async def run_async(self, client: AsyncRedis, keys: list[str], argv: list[Any]) -> Any:
        try:
            return await client.execute_command(*self.args(keys, argv))
        except NoScriptError:
            return await client.eval(self.source, len(keys), *keys, *argv)


_ACQUIRE = _Script(lua.ACQUIRE)
_RELEASE = _Script(lua.RELEASE)
_CANCEL = _Script(lua.CANCEL)
_EXTEND = _Script(lua.EXTEND)


class _Keys:
    __slots__ = ("fence", "grant", "lock", "queue", "waiters")

    def __init__(self, name: str, token: str) -> None:
        # The hash tag {lock:<name>} puts every key of one lock in one Redis Cluster slot.
        self.lock = f"{_conf().prefix}{{lock:{name}}}"
        self.fence = f"{self.lock}:fence"
        self.queue = f"{self.lock}:queue"
        self.waiters = f"{self.lock}:waiters"
        self.grant = f"{self.lock}:grant:{token}"

    @property
    def all(self) -> list[str]:
        return [self.lock, self.fence, self.queue, self.waiters, self.grant]


def _is_grant(popped: Any) -> bool:
    """A BLPOP result carrying a fence (a hand-over), not a timeout (None) nor a wake-up (0)."""
    return popped is not None and popped[1] not in (b"0", "0")


def _max_block(client: Redis | AsyncRedis) -> float:
    """Longest BLPOP: below the client's socket timeout, else the blocked read itself times out."""
    limit = _conf().max_block
    socket_timeout = client.connection_pool.connection_kwargs.get("socket_timeout")
    if socket_timeout:
        limit = min(limit, float(socket_timeout) * 0.75)
    return max(limit, 0.01)


class _Plan:
    """One acquisition's parameters, shared by the sync and async paths."""

    def __init__(self, name: str, ttl: float | None, timeout: float | None, client: Redis | AsyncRedis) -> None:
        self.name = name
        self.label = metric_label(name)
        self.ttl = _conf().ttl if ttl is None else float(ttl)
        if self.ttl <= 0:
            raise ValueError("ttl must be positive")
        self.timeout = _conf().timeout if timeout is None else float(timeout)
        if self.timeout < 0:
            raise ValueError("timeout must be >= 0 (math.inf waits forever)")
        self.token = os.urandom(16).hex()
        self.keys = _Keys(name, self.token)
        self.ttl_ms = max(1, int(self.ttl * 1000))
        self.max_block = _max_block(client)
        self.fair_after_ms = _conf().fair_after_ms
        # A waiter re-announces itself after every BLPOP; miss two and it counts as dead.
        self.alive_ms = int((2 * self.max_block + 1.0) * 1000)
        self.started = time.monotonic()
        self.deadline = self.started + self.timeout

    def acquire_argv(self, *, push: bool = False) -> list[Any]:
        return [
            self.token,
            self.ttl_ms,
            self.alive_ms,
            1 if self.timeout > 0 else 0,
            1 if push else 0,
            self.fair_after_ms,
        ]

    @property
    def token_argv(self) -> list[Any]:
        return [self.token, self.fair_after_ms]

    @property
    def pipelined(self) -> bool:
        """Whether to send ACQUIRE and a BLPOP in one round trip: worth it when this process last
        found the lock held (it will most likely wait again), not on the uncontended fast path."""
        return self.timeout > 0 and self.name in _recently_contended

    def after_pipeline(self, result: list[Any], popped: Any) -> tuple[int, int, int]:
        """Outcome of ACQUIRE(push) + BLPOP sent together: granted by the script, handed over
        during the BLPOP, or still waiting (woken or timed out)."""
        granted, fence, pttl = result
        if granted:
            return 1, fence, pttl  # the BLPOP popped the fence the script pushed
        self.contended = True
        if _is_grant(popped):
            return 1, int(popped[1]), self.ttl_ms
        return 0, 0, pttl

    def block_for(self, pttl_ms: int) -> float | None:
        """Seconds to BLPOP before re-checking (the holder's expiry is the fallback), or None: time is up."""
        remaining = self.deadline - time.monotonic()
        if remaining <= 0:
            return None
        block = min(remaining, self.max_block)
        if pttl_ms > 0:
            block = min(block, pttl_ms / 1000)
        return round(max(block, 0.001), 3)

    def granted(self) -> None:
        if self.contended:
            if len(_recently_contended) > 10_000:
                _recently_contended.clear()
            _recently_contended[self.name] = None
        else:
            _recently_contended.pop(self.name, None)
        waited = time.monotonic() - self.started
        inc(LOCKS_ACQUIRED, self.label)
        observe(LOCK_WAIT, self.label, waited)
        if self.contended:
            observe(LOCK_CONTENTION, self.label, waited)

    contended = False

    def timed_out(self) -> LockTimeout:
        _recently_contended[self.name] = None
        inc(LOCKS_TIMEOUT, self.label)
        return LockTimeout(
            f"lock {self.name!r} still held by another after {self.timeout:g}s: the operation is running "
            "elsewhere; retry shortly."
        )

    def unavailable(self, exc: BaseException) -> LockUnavailable:
        inc(LOCKS_UNAVAILABLE, self.label)
        return LockUnavailable(f"lock {self.name!r}: Redis unreachable ({exc})")


class _BaseLease:
    """What a grant carries: `token`, `fence` (strictly increasing per lock name), `ttl` (seconds)
    and `expires_at` (time.monotonic() seconds, a lower bound of the real expiry)."""

    def __init__(self, plan: _Plan, fence: int, sent_at: float, pttl_ms: int) -> None:
        self.name = plan.name
        self.token = plan.token
        self.fence = fence
        self.ttl = plan.ttl
        # Counted from when the granting request was sent, so it never overstates the lease.
        self.expires_at = sent_at + pttl_ms / 1000
        self.acquired_at = time.monotonic()
        self._plan = plan
        self._lost = False
        self._lost_counted = False
        self._released = False

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} fence={self.fence} remaining={self.remaining():.3f}s>"

    @property
    def lost(self) -> bool:
        """True once the lease may be gone: renewal or extend failed, release found another holder,
        or its expiry has passed (renewal keeps pushing that back)."""
        return self._lost or (not self._released and time.monotonic() >= self.expires_at)

    def remaining(self) -> float:
        return max(0.0, self.expires_at - time.monotonic())

    def _refuse_extend_after_release(self) -> None:
        if self._released:
            raise LockReleased(
                f"lock {self.name!r} (fence {self.fence}) was released: a released lease cannot be extended"
            )

    def _mark_lost(self, reason: str) -> None:
        self._lost = True
        if not self._lost_counted:
            self._lost_counted = True
            inc(LOCKS_LOST, self._plan.label)
            logger.warning("lock %r lost (fence %s): %s", self.name, self.fence, reason)

    def _extended(self, sent_at: float, ttl: float) -> None:
        self.ttl = ttl
        self.expires_at = sent_at + ttl

    def _release_keys(self) -> list[str]:
        keys = self._plan.keys
        return [keys.lock, keys.fence, keys.queue, keys.waiters]

    def _after_release(self, held: int) -> None:
        self._released = True
        observe(LOCK_HELD, self._plan.label, time.monotonic() - self.acquired_at)
        if not held:
            self._mark_lost("it had expired and was no longer ours at release")
            raise LockLost(f"lock {self.name!r} (fence {self.fence}) had expired before release")
        if self._lost:
            raise LockLost(f"lock {self.name!r} (fence {self.fence}) could not be renewed while held")


class Lease(_BaseLease):
    def __init__(self, plan: _Plan, fence: int, sent_at: float, pttl_ms: int, client: Redis) -> None:
        super().__init__(plan, fence, sent_at, pttl_ms)
        self._client = client
        self._renewer: threading.Thread | None = None
        self._stop: threading.Event | None = None

    def extend(self, ttl: float | None = None) -> None:
        """Reset the lease to `ttl` seconds (default: its TTL) from now. LockLost if no longer ours."""
        self._refuse_extend_after_release()
        ttl = self.ttl if ttl is None else float(ttl)
        sent = time.monotonic()
        try:
            ok = _EXTEND(self._client, [self._plan.keys.lock], [self.token, max(1, int(ttl * 1000))])
        except _UNREACHABLE as exc:
            raise self._plan.unavailable(exc) from exc
        if not ok:
            self._mark_lost("extend found another holder or none")
            raise LockLost(f"lock {self.name!r} (fence {self.fence}) expired before extend")
        self._extended(sent, ttl)

    def release(self) -> None:
        """Compare-and-delete and hand the lock to the next waiter. LockLost if it was no longer ours
        (another holder's lock is never touched)."""
        if self._released:
            return
        self._stop_renewal()
        try:
            held = _RELEASE(self._client, self._release_keys(), [self.token, self._plan.fair_after_ms])
        except _UNREACHABLE as exc:
            self._released = True  # the lease runs out on its own; nothing left to retry
            raise self._plan.unavailable(exc) from exc
        self._after_release(held)

    def _start_renewal(self) -> None:
        self._stop = threading.Event()
        self._renewer = threading.Thread(target=self._renew_loop, name=f"lock-renew:{self.name}", daemon=True)
        self._renewer.start()

    def _renew_loop(self) -> None:
        assert self._stop is not None
        while not self._stop.wait(self.ttl / 3):
            try:
                self.extend()
            except LockError as exc:
                self._mark_lost(f"renewal failed: {exc}")
                return

    def _stop_renewal(self) -> None:
        if self._renewer is not None and self._stop is not None:
            self._stop.set()
            self._renewer.join()
            self._renewer = None


class AsyncLease(_BaseLease):
    def __init__(self, plan: _Plan, fence: int, sent_at: float, pttl_ms: int, client: AsyncRedis) -> None:
        super().__init__(plan, fence, sent_at, pttl_ms)
        self._client = client
        self._renewer: asyncio.Task[None] | None = None

    async def extend(self, ttl: float | None = None) -> None:
        self._refuse_extend_after_release()
        ttl = self.ttl if ttl is None else float(ttl)
        sent = time.monotonic()
        try:
            ok = await _EXTEND.run_async(self._client, [self._plan.keys.lock], [self.token, max(1, int(ttl * 1000))])
        except _UNREACHABLE as exc:
            raise self._plan.unavailable(exc) from exc
        if not ok:
            self._mark_lost("extend found another holder or none")
            raise LockLost(f"lock {self.name!r} (fence {self.fence}) expired before extend")
        self._extended(sent, ttl)

    async def release(self) -> None:
        if self._released:
            return
        await self._stop_renewal()
        try:
            held = await _RELEASE.run_async(self._client, self._release_keys(), [self.token, self._plan.fair_after_ms])
        except _UNREACHABLE as exc:
            self._released = True
            raise self._plan.unavailable(exc) from exc
        self._after_release(held)

    def _start_renewal(self) -> None:
        self._renewer = asyncio.get_running_loop().create_task(self._renew_loop())

    async def _renew_loop(self) -> None:
        while True:
            await asyncio.sleep(self.ttl / 3)
            try:
                await self.extend()
            except LockError as exc:
                self._mark_lost(f"renewal failed: {exc}")
                return

    async def _stop_renewal(self) -> None:
        if self._renewer is not None:
            self._renewer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._renewer
            self._renewer = None


def _sync_try(client: Redis, plan: _Plan, block: float | None) -> tuple[int, int, int]:
    """One ACQUIRE; with `block`, pipelined with a BLPOP of that long: one round trip to queue
    (or stay queued) and wait."""
    if block is not None:
        try:
            return plan.after_pipeline(
                *_round_trip(
                    client,
                    _ACQUIRE.args(plan.keys.all, plan.acquire_argv(push=True)),
                    ("BLPOP", plan.keys.grant, block),
                )
            )
        except NoScriptError:
            pass  # Redis lost its scripts (restart): the plain call below reloads ours
    return _ACQUIRE(client, plan.keys.all, plan.acquire_argv())


def _sync_acquire(client: Redis, plan: _Plan) -> Lease:
    try:
        sent = time.monotonic()
        granted, fence, pttl = _sync_try(client, plan, plan.block_for(0) if plan.pipelined else None)
        while not granted:
            plan.contended = True
            block = plan.block_for(pttl)
            if block is None:
                sent = time.monotonic()
                granted, fence, pttl = _CANCEL(client, plan.keys.all, plan.token_argv)
                if granted:  # handed to us at the last moment: take it rather than waste it
                    break
                raise plan.timed_out()
            sent = time.monotonic()
            granted, fence, pttl = _sync_try(client, plan, block)
    except _UNREACHABLE as exc:
        raise plan.unavailable(exc) from exc
    except LockError:
        raise
    except BaseException:
        # KeyboardInterrupt, SystemExit...: leave the queue, hand on a grant we may have received.
        if plan.contended:
            _sync_abandon(client, plan)
        raise
    plan.granted()
    return Lease(plan, int(fence), sent, int(pttl), client)


def _sync_abandon(client: Redis, plan: _Plan) -> None:
    try:
        if _CANCEL(client, plan.keys.all, plan.token_argv)[0]:
            _RELEASE(client, plan.keys.all[:4], plan.token_argv)
    except Exception:  # best effort: the entry dies with its liveness window, a grant with its TTL
        logger.warning("lock %r: could not leave the wait queue", plan.name, exc_info=True)


async def _async_try(client: AsyncRedis, plan: _Plan, block: float | None) -> tuple[int, int, int]:
    if block is not None:
        pipe = client.pipeline(transaction=False)
        pipe.execute_command(*_ACQUIRE.args(plan.keys.all, plan.acquire_argv(push=True)))
        pipe.blpop([plan.keys.grant], timeout=block)
        try:
            return plan.after_pipeline(*(await pipe.execute()))
        except NoScriptError:
            pass
    return await _ACQUIRE.run_async(client, plan.keys.all, plan.acquire_argv())


async def _async_acquire(client: AsyncRedis, plan: _Plan) -> AsyncLease:
    try:
        sent = time.monotonic()
        granted, fence, pttl = await _async_try(client, plan, plan.block_for(0) if plan.pipelined else None)
        while not granted:
            plan.contended = True
            block = plan.block_for(pttl)
            if block is None:
                sent = time.monotonic()
                granted, fence, pttl = await _CANCEL.run_async(client, plan.keys.all, plan.token_argv)
                if granted:
                    break
                raise plan.timed_out()
            sent = time.monotonic()
            granted, fence, pttl = await _async_try(client, plan, block)
    except _UNREACHABLE as exc:
        raise plan.unavailable(exc) from exc
    except LockError:
        raise
    except BaseException:
        # Mostly CancelledError (asyncio.wait_for, a cancelled request): clean up in the background,
        # since a cancelled task must not await anything more.
        if plan.contended:
            asyncio.get_running_loop().create_task(_async_abandon(client, plan))
        raise
    plan.granted()
    return AsyncLease(plan, int(fence), sent, int(pttl), client)


async def _async_abandon(client: AsyncRedis, plan: _Plan) -> None:
    try:
        if (await _CANCEL.run_async(client, plan.keys.all, plan.token_argv))[0]:
            await _RELEASE.run_async(client, plan.keys.all[:4], plan.token_argv)
    except Exception:
        logger.warning("lock %r: could not leave the wait queue", plan.name, exc_info=True)


class Acquisition:
    """`with` or `async with`: acquires on entry, releases on exit (LockLost if the lease was lost)."""

    def __init__(self, owner: DistributedLock, name: str, ttl: float | None, timeout: float | None, renew: bool):
        self._owner = owner
        self._name = name
        self._ttl = ttl
        self._timeout = timeout
        self._renew = renew
        self._lease: Lease | None = None
        self._alease: AsyncLease | None = None

    def __enter__(self) -> Lease:
        client = self._owner.client()
        self._lease = _sync_acquire(client, _Plan(self._name, self._ttl, self._timeout, client))
        if self._renew:
            self._lease._start_renewal()
        return self._lease

    def __exit__(self, exc_type, exc, tb) -> None:
        lease, self._lease = self._lease, None
        assert lease is not None
        try:
            lease.release()
        except LockError:
            if exc is None:
                raise
            # Keep the block's own error (often the fenced write's refusal); the loss is logged.
            logger.warning("lock %r: release after a failed block", lease.name, exc_info=True)

    async def __aenter__(self) -> AsyncLease:
        client = self._owner.async_client()
        self._alease = await _async_acquire(client, _Plan(self._name, self._ttl, self._timeout, client))
        if self._renew:
            self._alease._start_renewal()
        return self._alease

    async def __aexit__(self, exc_type, exc, tb) -> None:
        lease, self._alease = self._alease, None
        assert lease is not None
        try:
            await lease.release()
        except LockError:
            if exc is None:
                raise
            logger.warning("lock %r: release after a failed block", lease.name, exc_info=True)


class DistributedLock:
    """Entry point: `distributed_lock.acquire(name, ttl=, timeout=, renew=)`.

    `ttl` (seconds) defaults to LOCKS_TTL, `timeout` to LOCKS_TIMEOUT (0 tries
    once, math.inf waits forever). Clients default to the service's shared ones; tests and tools
    may pass their own.
    """

    def __init__(
        self,
        client: Callable[[], Redis] | None = None,
        async_client: Callable[[], AsyncRedis] | None = None,
    ) -> None:
        self._client = client
        self._async_client = async_client

    def client(self) -> Redis:
        global _shared_client
        if self._client is not None:
            return self._client()
        if _shared_client is None:
            from core.redis import redis_client

            # django-redis's lookup goes through the cache handler's asgiref Local on every call;
            # the client it returns is process-wide and thread-safe, so keep it.
            _shared_client = redis_client()
        return _shared_client

    def async_client(self) -> AsyncRedis:
        if self._async_client is not None:
            return self._async_client()
        from core.redis import async_redis_client

        return async_redis_client()

    def acquire(
        self, name: str, *, ttl: float | None = None, timeout: float | None = None, renew: bool = False
    ) -> Acquisition:
        if not name:
            raise ValueError("a lock needs a name")
        return Acquisition(self, name, ttl, timeout, renew)


distributed_lock = DistributedLock()


def critical_section(
    name: str, *, ttl: float | None = None, timeout: float | None = None, renew: bool = False
) -> Callable[[F], F]:
    """Run the decorated function (sync or async) under `distributed_lock.acquire(name, ...)`."""

    def decorate(func: F) -> F:
        if inspect.iscoroutinefunction(func):

            @functools.wraps(func)
            async def run_async(*args: Any, **kwargs: Any) -> Any:
                async with distributed_lock.acquire(name, ttl=ttl, timeout=timeout, renew=renew):
                    return await func(*args, **kwargs)

            return cast(F, run_async)

        @functools.wraps(func)
        def run(*args: Any, **kwargs: Any) -> Any:
            with distributed_lock.acquire(name, ttl=ttl, timeout=timeout, renew=renew):
                return func(*args, **kwargs)

        return cast(F, run)

    return decorate

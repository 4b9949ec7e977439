"""The lock in one process (threads and asyncio) against the real Redis."""

from __future__ import annotations

import asyncio
import threading
import time

import pytest
from redis import Redis
from redis.asyncio import Redis as AsyncRedis
from redis.asyncio.retry import Retry as AsyncRetry
from redis.backoff import NoBackoff
from redis.exceptions import ResponseError
from redis.retry import Retry

from core.dependencies import unavailable_dependency
from core.redis import redis_client
from lifecycle.locks import (
    DistributedLock,
    LockLost,
    LockReleased,
    LockTimeout,
    LockUnavailable,
    critical_section,
    distributed_lock,
    lua,
)
from lifecycle.locks.lock import _ACQUIRE, _Keys, _recently_contended, _round_trip
from lifecycle.locks.metrics import LOCKS_ACQUIRED, LOCKS_LOST, LOCKS_TIMEOUT
from tests.support.instances import free_port


def lock_key(name: str) -> str:
    return _Keys(name, "-").lock


def holder(name: str) -> str | None:
    value = redis_client().get(lock_key(name))
    return value.decode() if value is not None else None


def metric(counter, label: str) -> float:
    return counter.labels(label)._value.get()


def test_acquire__lease_carries_token_fence_ttl_and_holds_the_key():
    with distributed_lock.acquire("proposal:1", ttl=5) as lease:
        assert holder("proposal:1") == lease.token
        assert lease.fence >= 1
        assert lease.ttl == 5
        assert 4.5 < lease.remaining() <= 5
        pttl = redis_client().pttl(lock_key("proposal:1"))
        assert 4000 < pttl <= 5000
    assert holder("proposal:1") is None


def test_acquire__keys_share_one_cluster_slot():
    keys = _Keys("proposal:7", "abc")
    assert {k.split("{", 1)[1].split("}", 1)[0] for k in keys.all} == {"lock:proposal:7"}


def test_acquire__fence_strictly_increasing():
    fences = []
    for _ in range(20):
        with distributed_lock.acquire("fenced") as lease:
            fences.append(lease.fence)
    assert fences == sorted(set(fences))
    assert len(fences) == 20


def test_acquire__default_ttl_from_settings(settings):
    settings.LOCKS_TTL = 7
    with distributed_lock.acquire("defaults") as lease:
        assert lease.ttl == 7
        assert 6000 < redis_client().pttl(lock_key("defaults")) <= 7000


def test_acquire__timeout_raises_lock_timeout_and_leaves_the_queue():
    before = metric(LOCKS_TIMEOUT, "busy")
    with distributed_lock.acquire("busy", ttl=10) as lease:
        started = time.monotonic()
        with pytest.raises(LockTimeout), distributed_lock.acquire("busy", timeout=0.3):
            pass
        waited = time.monotonic() - started
        assert 0.3 <= waited < 1.0
        assert holder("busy") == lease.token
        keys = _Keys("busy", "-")
        assert redis_client().exists(keys.queue, keys.waiters) == 0
    assert metric(LOCKS_TIMEOUT, "busy") == before + 1


def test_acquire__timeout_zero_tries_once():
    with distributed_lock.acquire("once"):
        started = time.monotonic()
        with pytest.raises(LockTimeout), distributed_lock.acquire("once", timeout=0):
            pass
        assert time.monotonic() - started < 0.1


def test_release__after_expiry_raises_lock_lost_and_spares_the_new_holder():
    before = metric(LOCKS_LOST, "expiring")
    with pytest.raises(LockLost), distributed_lock.acquire("expiring", ttl=0.2) as stale:  # noqa: PT012 (raised when the block exits)
        time.sleep(0.3)
        # Another holder took the expired lock while we were "paused".
        other = distributed_lock.acquire("expiring", ttl=10, timeout=0)
        new = other.__enter__()
        assert new.fence > stale.fence
    assert holder("expiring") == new.token
    other.__exit__(None, None, None)
    assert holder("expiring") is None
    assert metric(LOCKS_LOST, "expiring") == before + 1


def test_release__lost_lock_keeps_the_blocks_own_error():
    with pytest.raises(ZeroDivisionError), distributed_lock.acquire("error", ttl=0.1):  # noqa: PT012 (raised when the block exits)
        time.sleep(0.2)
        1 / 0  # noqa: B018


def test_release__hands_over_to_the_waiter_at_once():
    granted = threading.Event()
    waits: list[float] = []

    def waiter():
        started = time.monotonic()
        with distributed_lock.acquire("handoff", timeout=5):
            waits.append(time.monotonic() - started)
            granted.set()

    with distributed_lock.acquire("handoff", ttl=30):
        thread = threading.Thread(target=waiter)
        thread.start()
        wait_for_queue("handoff", 1)
        released = time.monotonic()
    assert granted.wait(2)
    thread.join()
    # Woken by the release (not by the 30 s expiry, nor its own 1 s LOCK_MAX_BLOCK re-check).
    assert time.monotonic() - released < 0.5


def wait_for_queue(name: str, length: int) -> None:
    deadline = time.monotonic() + 5
    while redis_client().llen(_Keys(name, "-").queue) < length:
        assert time.monotonic() < deadline, "waiter never queued"
        time.sleep(0.005)


def test_release__strict_fifo_newcomer_cannot_barge_ahead_of_a_waiter(settings):
    settings.LOCKS_FAIR_AFTER = 0
    got: list[str] = []
    thread = None
    with distributed_lock.acquire("fair"):
        thread = threading.Thread(
            target=lambda: got.append(distributed_lock.acquire("fair", timeout=5).__enter__().token)
        )
        thread.start()
        wait_for_queue("fair", 1)
    # The release handed the lock to the queued waiter inside Redis: a newcomer finds it taken.
    with pytest.raises(LockTimeout), distributed_lock.acquire("fair", timeout=0):
        pass
    thread.join()
    assert holder("fair") == got[0]


def test_release__waiters_are_served_in_arrival_order():
    order: list[int] = []

    def waiter(i: int) -> None:
        with distributed_lock.acquire("fifo", timeout=10):
            order.append(i)
            time.sleep(0.01)

    threads = []
    with distributed_lock.acquire("fifo"):
        for i in range(4):
            thread = threading.Thread(target=waiter, args=(i,))
            thread.start()
            threads.append(thread)
            wait_for_queue("fifo", i + 1)
    for thread in threads:
        thread.join()
    assert order == [0, 1, 2, 3]


def test_release__young_waiter_is_woken_and_may_lose_a_round_old_waiter_gets_the_hand_over(settings):
    settings.LOCKS_FAIR_AFTER = 0.3
    client = redis_client()
    waiter = _Keys("bounded", "w")
    with distributed_lock.acquire("bounded"):
        # A waiter (driven by hand here, so the test decides who is first) queues behind us.
        granted, _, _ = _ACQUIRE(client, waiter.all, ["w", 30000, 10_000, 1, 0, 300])
        assert not granted
    # It had waited less than LOCK_FAIR_AFTER: the release only woke it, a newcomer may barge...
    assert holder("bounded") is None
    assert client.lrange(waiter.grant, 0, -1) == [b"0"]
    with distributed_lock.acquire("bounded", timeout=0) as barger:
        assert holder("bounded") == barger.token
        time.sleep(0.35)
    # ...but once it has waited LOCK_FAIR_AFTER, the next release hands the lock straight to it.
    assert holder("bounded") == "w"
    assert client.lpop(waiter.grant) == b"0"  # the wake-up it has not consumed, then its fence
    assert int(client.lpop(waiter.grant)) > barger.fence
    with pytest.raises(LockTimeout), distributed_lock.acquire("bounded", timeout=0):
        pass


def test_release__skips_a_dead_waiter():
    client = redis_client()
    with distributed_lock.acquire("deadwaiter", ttl=30) as lease:
        # A waiter that queued and died: it announced itself alive for 50 ms only.
        dead = _Keys("deadwaiter", "dead")
        granted, _, _ = _ACQUIRE(client, dead.all, ["dead", 30000, 50, 1])
        assert not granted
        time.sleep(0.1)
        result: list[int] = []
        thread = threading.Thread(
            target=lambda: result.append(distributed_lock.acquire("deadwaiter", timeout=5).__enter__().fence)
        )
        thread.start()
        wait_for_queue("deadwaiter", 2)
    thread.join(5)
    assert result
    assert result[0] > lease.fence
    assert holder("deadwaiter") != "dead"
    assert client.exists(dead.grant) == 0


def test_extend__resets_the_ttl_and_fails_once_lost():
    with distributed_lock.acquire("extend", ttl=0.5) as lease:
        lease.extend(5)
        assert redis_client().pttl(lock_key("extend")) > 4000
        assert lease.remaining() > 4
    with pytest.raises(LockLost), distributed_lock.acquire("extend", ttl=0.1) as lease:  # noqa: PT012 (raised when the block exits)
        time.sleep(0.2)
        lease.extend()


def test_extend__after_release_raises_lock_released_and_counts_no_lost_lock(caplog):
    before = metric(LOCKS_LOST, "extended-late")
    with distributed_lock.acquire("extended-late", ttl=5) as lease:
        pass
    with pytest.raises(LockReleased, match="released"):
        lease.extend()
    assert metric(LOCKS_LOST, "extended-late") == before
    assert not lease.lost
    assert "lost" not in caplog.text


def test_extend__async_after_release_raises_lock_released_and_counts_no_lost_lock(caplog):
    before = metric(LOCKS_LOST, "extended-late-async")

    async def scenario():
        async with distributed_lock.acquire("extended-late-async", ttl=5) as lease:
            pass
        with pytest.raises(LockReleased, match="released"):
            await lease.extend()
        return lease

    lease = asyncio.run(scenario())
    assert metric(LOCKS_LOST, "extended-late-async") == before
    assert not lease.lost
    assert "lost" not in caplog.text


def test_renew__keeps_the_lock_past_its_ttl():
    with distributed_lock.acquire("renewed", ttl=1.0, renew=True) as lease:
        time.sleep(2.2)
        assert holder("renewed") == lease.token
        assert not lease.lost
        with pytest.raises(LockTimeout), distributed_lock.acquire("renewed", timeout=0):
            pass
    assert holder("renewed") is None


def test_renew__failed_extension_marks_the_lease_lost():
    client = redis_client()
    with pytest.raises(LockLost), distributed_lock.acquire("renewfail", ttl=0.6, renew=True) as lease:  # noqa: PT012 (raised when the block exits)
        # The lease vanishes under us (as after a long pause or a failover) and someone else takes it.
        client.set(lock_key("renewfail"), "someone-else", px=10_000)
        deadline = time.monotonic() + 2
        while not lease.lost and time.monotonic() < deadline:
            time.sleep(0.02)
        assert lease.lost
    assert holder("renewfail") == "someone-else"


def test_critical_section__serialises_threads():
    client = redis_client()
    inside = []

    @critical_section("section")
    def bump() -> None:
        inside.append(1)
        assert len(inside) == 1
        seen = int(client.get("test:section") or 0)
        time.sleep(0.002)
        client.set("test:section", seen + 1)
        inside.pop()

    threads = [threading.Thread(target=lambda: [bump() for _ in range(10)]) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert int(client.get("test:section")) == 40


def test_unavailable__closed_port_fails_closed():
    down = DistributedLock(client=lambda: Redis(port=free_port(), retry=Retry(NoBackoff(), 0)))
    with pytest.raises(LockUnavailable) as caught, down.acquire("anything", timeout=1):
        pytest.fail("granted without Redis")
    # Chained to the Redis error: the middleware answers 503 with Retry-After.
    assert unavailable_dependency(caught.value) == "redis"


def test_metrics__acquired_counted():
    before = metric(LOCKS_ACQUIRED, "counted")
    with distributed_lock.acquire("counted:1"):
        pass
    assert metric(LOCKS_ACQUIRED, "counted") == before + 1


def test_metrics__wait_held_contention_timeout_and_lost_are_observed():
    from prometheus_client import REGISTRY

    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name, {"lock": "observed"}) or 0.0

    names = [
        "lock_wait_seconds_count",
        "lock_held_seconds_count",
        "lock_contention_seconds_count",
        "locks_timeout_total",
        "locks_lost_total",
    ]
    before = {name: sample(name) for name in names}
    with distributed_lock.acquire("observed:1", ttl=0.3):
        thread = threading.Thread(target=lambda: distributed_lock.acquire("observed:1", timeout=5).__enter__())
        thread.start()
        time.sleep(0.05)
    thread.join()
    with pytest.raises(LockTimeout), distributed_lock.acquire("observed:1", timeout=0):
        pass
    with pytest.raises(LockLost), distributed_lock.acquire("observed:2", ttl=0.05):
        time.sleep(0.1)
    after = {name: sample(name) for name in names}
    assert after["lock_wait_seconds_count"] - before["lock_wait_seconds_count"] == 3
    assert after["lock_held_seconds_count"] - before["lock_held_seconds_count"] == 2
    assert after["lock_contention_seconds_count"] - before["lock_contention_seconds_count"] == 1
    assert after["locks_timeout_total"] - before["locks_timeout_total"] == 1
    assert after["locks_lost_total"] - before["locks_lost_total"] == 1


def test_scripts__hash_tag_keeps_grant_keys_in_the_slot():
    # The scripts derive other waiters' grant keys from KEYS[1]; they must match _Keys.grant.
    assert "lock .. ':grant:' .. who" in lua._COMMON
    assert _Keys("n", "t").grant == _Keys("n", "t").lock + ":grant:t"


def test_scripts__reloaded_after_redis_lost_them():
    client = redis_client()
    with distributed_lock.acquire("flushed"):
        pass
    client.script_flush()
    with distributed_lock.acquire("flushed") as lease:  # the plain call
        assert holder("flushed") == lease.token
    _recently_contended["flushed"] = None  # next call: ACQUIRE and BLPOP pipelined
    client.script_flush()
    with distributed_lock.acquire("flushed", timeout=0.3) as lease:
        assert holder("flushed") == lease.token
    assert holder("flushed") is None


def test_round_trip__an_error_reply_is_raised_after_all_replies_are_read():
    client = redis_client()
    client.set("test:clean", "value")
    with pytest.raises(ResponseError):
        _round_trip(client, ("EVALSHA", "0" * 40, 0), ("GET", "test:clean"))
    # The GET's reply was consumed: the pooled connection answers the next command, not that one.
    assert client.incr("test:counter") == 1
    assert client.get("test:clean") == b"value"


# --- asyncio: the same names with `async with` ---


def test_async__acquire_release_and_fence():
    async def main() -> tuple[int, int]:
        async with distributed_lock.acquire("async", ttl=5) as first:
            assert holder("async") == first.token
        async with distributed_lock.acquire("async", ttl=5) as second:
            pass
        return first.fence, second.fence

    first, second = asyncio.run(main())
    assert second > first
    assert holder("async") is None


def test_async__mutual_exclusion_between_tasks():
    client = redis_client()

    @critical_section("async-counter")
    async def bump() -> None:
        seen = int(client.get("test:async-counter") or 0)
        await asyncio.sleep(0.001)
        client.set("test:async-counter", seen + 1)

    async def main() -> None:
        await asyncio.gather(*(bump() for _ in range(30)))

    asyncio.run(main())
    assert int(client.get("test:async-counter")) == 30


def test_async__timeout_and_lost():
    async def main() -> None:
        async with distributed_lock.acquire("async-busy", ttl=5):
            with pytest.raises(LockTimeout):
                async with distributed_lock.acquire("async-busy", timeout=0.2):
                    pass
        with pytest.raises(LockLost):
            async with distributed_lock.acquire("async-lost", ttl=0.1):
                await asyncio.sleep(0.2)

    asyncio.run(main())


def test_async__renew_keeps_and_failed_renew_loses():
    client = redis_client()

    async def main() -> None:
        async with distributed_lock.acquire("async-renew", ttl=1.0, renew=True) as lease:
            await asyncio.sleep(2.2)
            assert holder("async-renew") == lease.token
        with pytest.raises(LockLost):  # noqa: PT012 (raised when the block exits)
            async with distributed_lock.acquire("async-renewfail", ttl=0.6, renew=True) as lease:
                client.set(lock_key("async-renewfail"), "other", px=10_000)
                await asyncio.sleep(0.5)
                assert lease.lost

    asyncio.run(main())
    assert holder("async-renewfail") == "other"


def test_async__cancelled_waiter_leaves_the_queue():
    async def main() -> None:
        async with distributed_lock.acquire("async-cancel", ttl=5):
            with pytest.raises(asyncio.TimeoutError):
                await asyncio.wait_for(distributed_lock.acquire("async-cancel", timeout=5).__aenter__(), 0.2)
            await asyncio.sleep(0.1)  # the background clean-up runs
            keys = _Keys("async-cancel", "-")
            assert redis_client().exists(keys.queue, keys.waiters) == 0

    asyncio.run(main())


def test_async__unavailable():
    down = DistributedLock(async_client=lambda: AsyncRedis(port=free_port(), retry=AsyncRetry(NoBackoff(), 0)))

    async def main() -> None:
        async with down.acquire("anything", timeout=1):
            pytest.fail("granted without Redis")

    with pytest.raises(LockUnavailable) as caught:
        asyncio.run(main())
    assert unavailable_dependency(caught.value) == "redis"


def test_unavailable__service_clients_from_settings_fail_closed(settings):
    # The default lock uses the service's own clients, built from CACHES: point them at a closed port.
    cache = settings.CACHES["default"]
    settings.CACHES = {"default": {**cache, "LOCATION": f"redis://127.0.0.1:{free_port()}/0"}}
    with pytest.raises(LockUnavailable), distributed_lock.acquire("down", timeout=1):
        pytest.fail("granted without Redis")

    async def main() -> None:
        async with distributed_lock.acquire("down", timeout=1):
            pytest.fail("granted without Redis")

    with pytest.raises(LockUnavailable) as caught:
        asyncio.run(main())
    assert unavailable_dependency(caught.value) == "redis"

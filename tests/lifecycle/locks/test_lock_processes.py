"""The lock between real processes: mutual exclusion, a SIGKILLed holder, a SIGSTOPped stale holder."""

from __future__ import annotations

import itertools
import os
import signal
import time

import pytest

from core.redis import redis_client
from lifecycle.locks import LockTimeout, distributed_lock
from lifecycle.locks.lock import _Keys
from tests.lifecycle.locks.fenced import fenced_value, fenced_write

pytestmark = pytest.mark.slow


def test_processes__mutual_exclusion_counter_is_exact(spawn_worker):
    processes, rounds = 4, 40
    workers = [spawn_worker("counter", "counter", "test:counter", str(rounds)) for _ in range(processes)]
    grants = []
    for worker in workers:
        while "done" not in (line := worker.read()):
            grants.append(line)
    for worker in workers:
        assert worker.process.wait(timeout=30) == 0
    # A lost update (two holders at once) would leave the counter short.
    assert int(redis_client().get("test:counter")) == processes * rounds
    # Each grant saw the previous grant's write, and grant order is fence order.
    grants.sort(key=lambda g: g["seen"])
    assert [g["seen"] for g in grants] == list(range(processes * rounds))
    fences = [g["fence"] for g in grants]
    assert all(a < b for a, b in itertools.pairwise(fences))


def test_processes__sigkilled_holders_lock_is_free_after_its_ttl(spawn_worker):
    worker = spawn_worker("hold", "killed", "1.0")
    held = worker.read()
    os.kill(worker.pid, signal.SIGKILL)
    worker.process.wait(timeout=5)
    killed_at = time.monotonic()
    with pytest.raises(LockTimeout), distributed_lock.acquire("killed", timeout=0):
        pass
    # A waiter queued behind the dead holder is woken by the expiry, not by a release.
    with distributed_lock.acquire("killed", timeout=5) as lease:
        waited = time.monotonic() - killed_at
        assert lease.fence > held["fence"]
    assert 0.5 < waited < 1.6


def test_processes__stale_holder_is_fenced_and_cannot_release_the_new_lock(spawn_worker):
    client = redis_client()
    a = spawn_worker("stale", "stale", "0.5")
    a_fence = a.read()["fence"]
    os.kill(a.pid, signal.SIGSTOP)  # A stalls past its TTL (GC pause, throttling...)
    try:
        with distributed_lock.acquire("stale", ttl=30, timeout=3) as b:
            assert b.fence > a_fence
            assert fenced_write(client, "stale", b.fence, "B")
            os.kill(a.pid, signal.SIGCONT)
            a.send("go")
            result = a.read()
            assert a.process.wait(timeout=10) == 0
            # A's write with its old fence is refused at the data; B's stands.
            assert result["write"] == "refused"
            assert fenced_value(client, "stale") == "B"
            # A's release found the lock no longer its own and left B's alone.
            assert result["release"].startswith("LockLost")
            assert client.get(_Keys("stale", "-").lock).decode() == b.token
    finally:
        if a.process.poll() is None:
            os.kill(a.pid, signal.SIGCONT)

"""The lock's Prometheus metrics (multiprocess-safe: counters and histograms only).

The `lock` label is the lock name up to its first ':' ("proposal:123" -> "proposal"), so one
series per kind of lock, not one per proposal.
"""

import functools
from typing import Any

from prometheus_client import Counter, Histogram

_WAIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30)
_HELD_BUCKETS = (0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 60, 300)

LOCKS_ACQUIRED = Counter("locks_acquired", "Distributed locks granted.", ["lock"])
LOCKS_TIMEOUT = Counter("locks_timeout", "Lock acquisitions that gave up (LockTimeout).", ["lock"])
LOCKS_LOST = Counter("locks_lost", "Leases that expired or failed to renew before release.", ["lock"])
LOCKS_UNAVAILABLE = Counter("locks_unavailable", "Lock operations refused because Redis was unreachable.", ["lock"])
LOCK_WAIT = Histogram("lock_wait_seconds", "Time from acquire() to grant.", ["lock"], buckets=_WAIT_BUCKETS)
LOCK_CONTENTION = Histogram(
    "lock_contention_seconds", "Wait of the acquisitions that found the lock held.", ["lock"], buckets=_WAIT_BUCKETS
)
LOCK_HELD = Histogram("lock_held_seconds", "Time from grant to release.", ["lock"], buckets=_HELD_BUCKETS)


def metric_label(name: str) -> str:
    return name.split(":", 1)[0]


@functools.lru_cache(maxsize=256)
def _child(metric: Any, label: str) -> Any:
    # .labels() takes a lock and builds a key per call; the hot path reuses the child instead.
    return metric.labels(label)


def inc(metric: Counter, label: str) -> None:
    _child(metric, label).inc()


def observe(metric: Histogram, label: str, value: float) -> None:
    _child(metric, label).observe(value)

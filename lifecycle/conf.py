"""The lifecycle app's settings, each with its default (read through `lifecycle_settings`)."""

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Seconds a client is told to wait (Retry-After) when PostgreSQL or Redis is unreachable.
    "RETRY_AFTER_SECONDS": 5,
    # Directory for pidfiles and drain flags of the instances on this host.
    "RUN_DIR": "/tmp/omk",
    # --- distributed lock (lifecycle.locks, issue 4) ---
    # Lease length in seconds when the caller gives none: a holder that dies frees the lock after it.
    "LOCK_TTL": 30.0,
    # Seconds acquire() waits for a held lock before LockTimeout, when the caller gives none.
    "LOCK_TIMEOUT": 10.0,
    # Prefix of every lock key, so locks never collide with cache or session keys.
    "LOCK_KEY_PREFIX": "omk:",
    # Longest single BLPOP of a waiter (seconds). It must stay below the Redis socket timeout
    # (a blocked read longer than that is a socket timeout); waiters re-announce themselves
    # after each one, which is how a dead waiter is told from a live one.
    "LOCK_MAX_BLOCK": 1.0,
    # Seconds a queued waiter may lose the lock to newcomers (a release only wakes it to compete)
    # before releases hand the lock straight to it. 0 (default): every release hands over, strict
    # FIFO. A few ms can spare a process switch per grant under heavy contention on idle cores,
    # but measured worse on our loaded 2-core machine (bench/locks.py), hence off.
    "LOCK_FAIR_AFTER": 0.0,
}


class LifecycleSettings:
    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(name)
        return getattr(settings, f"LIFECYCLE_{name}", DEFAULTS[name])


lifecycle_settings = LifecycleSettings()

"""The lock's settings: `locks_settings.X` reads `settings.LOCKS_X`, else the default here."""

from core.conf import AppSettings


class LocksSettings(AppSettings):
    prefix = "LOCKS_"
    # Lease length in seconds when the caller gives none: a holder that dies frees the lock after it.
    TTL: float = 30.0
    # Seconds acquire() waits for a held lock before LockTimeout, when the caller gives none.
    TIMEOUT: float = 10.0
    # Prefix of every lock key, so locks never collide with cache or session keys.
    KEY_PREFIX: str = "omk:"
    # Longest single BLPOP of a waiter (seconds). It must stay below the Redis socket timeout
    # (a blocked read longer than that is a socket timeout); waiters re-announce themselves
    # after each one, which is how a dead waiter is told from a live one.
    MAX_BLOCK: float = 1.0
    # Seconds a queued waiter may lose the lock to newcomers (a release only wakes it to compete)
    # before releases hand the lock straight to it. 0 (default): every release hands over, strict
    # FIFO. A few ms can spare a process switch per grant under heavy contention on idle cores,
    # but measured worse on a loaded 2-core machine (bench/locks.py), hence off.
    FAIR_AFTER: float = 0.0


locks_settings = LocksSettings()

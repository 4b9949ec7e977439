"""Distributed lock with fencing tokens and fair hand-off. See lock.py and lua.py.

with distributed_lock.acquire(f"proposal:{pk}", ttl=30, timeout=10) as lease:
    proposal_execute(proposal=p, fence=lease.fence)

async with distributed_lock.acquire("governance_voting"):
    ...

@critical_section("governance_voting")  # sync or async functions
def count_votes(): ...
"""

from lifecycle.locks.lock import (
    AsyncLease,
    DistributedLock,
    Lease,
    LockError,
    LockLost,
    LockReleased,
    LockTimeout,
    LockUnavailable,
    critical_section,
    distributed_lock,
)

__all__ = [
    "AsyncLease",
    "DistributedLock",
    "Lease",
    "LockError",
    "LockLost",
    "LockReleased",
    "LockTimeout",
    "LockUnavailable",
    "critical_section",
    "distributed_lock",
]

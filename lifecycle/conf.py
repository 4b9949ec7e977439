"""The lifecycle app's settings, each with its default (read through `lifecycle_settings`)."""

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Seconds a client is told to wait (Retry-After) when PostgreSQL or Redis is unreachable.
    "RETRY_AFTER_SECONDS": 5,
    # Directory for pidfiles and drain flags of the instances on this host.
    "RUN_DIR": "/tmp/omk",
    # Instance registry: each instance writes its heartbeat to Redis this often, and an instance
    # whose heartbeat is older than the TTL (and that did not stop cleanly) is lost.
    "HEARTBEAT_INTERVAL": 5.0,
    "HEARTBEAT_TTL": 15.0,
    # Seconds between readiness turning 503 and the listener closing, so load balancers stop
    # sending first. None: the platform's default (lifecycle.platform.default_drain_delay).
    "DRAIN_DELAY": None,
    # A job whose procrastinate worker sent no heartbeat for this long is retried by recovery.
    "STALLED_JOB_SECONDS": 3.0,
    # Seconds between two recovery passes run by the job workers.
    "RECOVERY_INTERVAL": 5,
    # Pluggable steps (dotted paths of lifecycle.steps.Step subclasses), run in this order.
    "SHUTDOWN_STEPS": [
        "lifecycle.shutdown.HandBackJobs",
        "lifecycle.shutdown.HandBackMessages",
        "lifecycle.shutdown.ExportOutbox",
        "lifecycle.shutdown.CloseConnections",
    ],
    "RECOVERY_STEPS": [
        "lifecycle.recovery.MarkLostInstances",
        "lifecycle.recovery.RetryStalledJobs",
        "lifecycle.recovery.RedeliverMessages",
        "lifecycle.recovery.CountSessions",
        "lifecycle.recovery.CountShutdowns",
    ],
    # Port on which `manage.py worker` serves Prometheus metrics (its outbox, recovery and lock
    # samples), or None. On GKE the worker is a pod of its own and must be scraped itself; on
    # Cloud Run it is a sidecar whose samples the web container's /metrics already includes.
    "WORKER_METRICS_PORT": None,
    # Seconds kept back from the shutdown deadline to store the report and exit.
    "REPORT_RESERVE": 0.5,
    # Test-only views (a slow endpoint for the shutdown tests); never enabled in production.
    "TEST_VIEWS": False,
    # --- sessions and queues (issue 5, hive helper) ---
    # Seconds a session_manager session lives after its last use (sliding).
    "SESSION_TTL_SECONDS": 3600,
    # Prefix of the Redis keys of session_manager sessions.
    "SESSION_KEY_PREFIX": "omk:session:",
    # Seconds a claimed, unacknowledged queue message stays with its consumer before any other
    # consumer may take it over (XAUTOCLAIM).
    "QUEUE_VISIBILITY_TIMEOUT_SECONDS": 60,
    # Seconds a queue message is kept in its stream before it is trimmed, acked or not.
    "QUEUE_RETENTION_SECONDS": 24 * 3600,
    # Longest a claim may block waiting for messages; kept below REDIS_SOCKET_TIMEOUT (hive.E001).
    "QUEUE_MAX_BLOCK_MS": 1000,
    # Largest count a single claim may take.
    "QUEUE_MAX_CLAIM_COUNT": 100,
    # Consumer group every queue is read through.
    "QUEUE_GROUP": "bees",
    # Prefix of the Redis stream keys of the queues.
    "QUEUE_KEY_PREFIX": "omk:queue:",
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

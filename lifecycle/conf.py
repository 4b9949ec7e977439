"""The lifecycle app's settings: `lifecycle_settings.X` reads `settings.LIFECYCLE_X`, else the default here."""

from core.conf import AppSettings


class LifecycleSettings(AppSettings):
    prefix = "LIFECYCLE_"
    # Instance registry: each instance writes its heartbeat to Redis this often, and an instance
    # whose heartbeat is older than the TTL (and that did not stop cleanly) is lost.
    HEARTBEAT_INTERVAL: float = 5.0
    HEARTBEAT_TTL: float = 15.0
    # Seconds between readiness turning 503 and the listener closing, so load balancers stop
    # sending first. None: the platform's default (lifecycle.platform.default_drain_delay).
    DRAIN_DELAY: float | None = None
    # A job whose procrastinate worker sent no heartbeat for this long is retried by recovery.
    STALLED_JOB_SECONDS: float = 3.0
    # Pluggable steps (dotted paths of lifecycle.steps.Step subclasses), run in this order. Each
    # app contributes the steps for what it owns (jobs here, messages in queues, events in outbox).
    SHUTDOWN_STEPS: list[str] = [
        "lifecycle.shutdown.HandBackJobs",
        "lifecycle.queues.steps.HandBackMessages",
        "lifecycle.outbox.steps.ExportOutbox",
        "lifecycle.sessions.steps.ReportActiveSessions",
        "lifecycle.shutdown.FlushLogs",
        "lifecycle.shutdown.CloseConnections",
    ]
    RECOVERY_STEPS: list[str] = [
        "lifecycle.recovery.MarkLostInstances",
        "lifecycle.recovery.RetryStalledJobs",
        "lifecycle.queues.steps.RedeliverMessages",
        "lifecycle.sessions.steps.CountSessions",
        "lifecycle.recovery.CountShutdowns",
    ]
    # Port on which `manage.py worker` serves Prometheus metrics (its outbox, recovery and lock
    # samples), or None. On GKE the worker is a pod of its own and must be scraped itself; on
    # Cloud Run it is a sidecar whose samples the web container's /metrics already includes.
    WORKER_METRICS_PORT: int | None = None
    # The worker's /health (on that port) answers 503, and the kubelet restarts it, when its event
    # loop or its heartbeat thread has not turned for this long: hung, not busy (jobs run while
    # both turn). Over the heartbeat interval, or a healthy thread waiting for its next beat
    # would look hung (lifecycle.E007).
    WORKER_HUNG_SECONDS: float = 30.0
    # Seconds kept back from the shutdown deadline to store the report and exit.
    REPORT_RESERVE: float = 0.5
    # Test-only views (a slow endpoint for the shutdown tests); never enabled in production.
    TEST_VIEWS: bool = False
    # /metrics to anyone (local, tests). False (production): only to requests that did not come
    # through a proxy (Prometheus scraping the pod itself; the load balancer always adds
    # X-Forwarded-For), or that carry `Authorization: Bearer <METRICS_TOKEN>`.
    METRICS_PUBLIC: bool = True
    METRICS_TOKEN: str = ""


lifecycle_settings = LifecycleSettings()

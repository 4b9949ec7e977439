"""The lifecycle app's settings: `lifecycle_settings.X` reads `settings.LIFECYCLE_X`, else the default here."""

from core.conf import AppSettings


class LifecycleSettings(AppSettings):
    prefix = "LIFECYCLE_"
    # Instance registry: each instance writes its heartbeat to Redis this often, and an instance
    # whose heartbeat is older than the TTL (and that did not stop cleanly) is lost.
    HEARTBEAT_INTERVAL: float = 5.0
    HEARTBEAT_TTL: float = 15.0
    # Request-based CPU (Cloud Run with cpu-throttling): a web instance gets no CPU between
    # requests, so its heartbeat thread stalls whenever it is idle. With this set, a beat written
    # while no request is in flight (and the one each request writes as it ends) lasts this long
    # instead of HEARTBEAT_TTL: an idle instance holds no work and is not counted lost; one that
    # dies serving requests still is, HEARTBEAT_TTL after its last beat. Cloud Run keeps an idle
    # instance at most 15 minutes. None: every beat lasts HEARTBEAT_TTL (CPU always allocated).
    IDLE_HEARTBEAT_TTL: float | None = None
    # Seconds between readiness turning 503 and the listener closing, so load balancers stop
    # sending first. None: the platform's default (lifecycle.platform.default_drain_delay).
    DRAIN_DELAY: float | None = None
    # An instance that stopped or was lost this long ago leaves the registry, with its events
    # and reports (a daily task); every start is a new row, so without it the table only grows.
    INSTANCE_RETENTION_SECONDS: float = 30 * 86400.0
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
    # Waking a worker that scales to zero (lifecycle/wake.py). WAKE_URL: the worker service's
    # POST /internal/wake, which a web request that created work calls (empty: no wake-ups, the
    # worker is always on). WAKE_AUDIENCE: with it, an ID token for that audience from the
    # metadata server goes along (Cloud Run IAM). WAKE_TOKEN: the shared secret both sides hold
    # (X-OMK-Wake-Token). WAKE_DEBOUNCE: seconds during which further jobs send no new wake-up
    # (the running drain sees them through the pending mark). WAKE_TIMEOUT: the connect and send of
    # a wake-up, within the user's request.
    WAKE_URL: str = ""
    WAKE_AUDIENCE: str = ""
    WAKE_TOKEN: str = ""
    WAKE_DEBOUNCE: float = 10.0
    # The same for a request that created only analytics events (no job): they can wait for their
    # export as long as the scheduled drain's period (5 minutes on Cloud Run), and a steady trickle
    # of them then costs one drain per period, not a worker always running (docs/scaling.md).
    WAKE_EVENT_DEBOUNCE: float = 300.0
    WAKE_TIMEOUT: float = 1.0
    # What sends a wake-up: a dotted path to a `lifecycle.wake.WakeBackend` subclass.
    WAKE_BACKEND: str = "lifecycle.wake.HttpWake"
    # This instance serves POST /internal/wake (the Cloud Run worker service): each wake-up runs
    # `manage.py worker --until-empty` and answers when the queue is empty.
    WAKE_SERVE: bool = False
    # A drain (`manage.py worker --until-empty`) stops after this many seconds even if work is
    # left (the next wake-up or the scheduled drain takes the rest): below the worker service's
    # request timeout, so that the drain ends before Cloud Run cuts its request off.
    DRAIN_MAX_SECONDS: float = 240.0
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

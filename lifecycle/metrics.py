"""Prometheus metrics of an instance's life, and the /metrics view (multiprocess mode).

Under gunicorn every worker is a process: prometheus-client writes each process's samples to
files in PROMETHEUS_MULTIPROC_DIR (emptied by the master at start, see omk/gunicorn.conf.py) and
/metrics aggregates them. Without that variable (tests, manage.py) the default registry is used.

Each app of lifecycle/ (locks, outbox, sessions, queues, idempotency) and hive defines its own metrics
in its `metrics.py`; /metrics serves them all.
"""

from __future__ import annotations

import glob
import hmac
import os

from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

INSTANCE_STARTUP = Counter("instance_startup_total", "Instances that registered and started", ("kind",))
JOB_WORKER_RESTARTS = Counter(
    "job_worker_restarts_total", "procrastinate workers restarted in-process after they stopped by themselves"
)
WORKER_WAKEUPS = Counter(
    "worker_wakeups_total",
    "Wake-ups of a worker that scales to zero, by outcome (sent, debounced, failed)",
    ("outcome",),
)
DRAIN_ROUNDS = Counter("worker_drain_rounds_total", "Rounds of `manage.py worker --until-empty` (jobs, outbox, passes)")
INSTANCE_SHUTDOWN = Counter("instance_shutdown_total", "Instance shutdowns, by outcome", ("kind", "outcome"))
INSTANCE_SHUTDOWN_DURATION = Histogram(
    "instance_shutdown_duration_seconds",
    "Seconds from SIGTERM to the end of the shutdown sequence",
    buckets=(0.5, 1, 2, 5, 10, 20, 30, 60),
)
RECOVERY_SUCCESS = Counter("instance_recovery_success_total", "Recovery passes whose steps all succeeded")
RECOVERY_FAILURE = Counter("instance_recovery_failure_total", "Recovery passes with a failed or timed-out step")
# Work an instance hands over when it stops: jobs and messages handed back, outbox events
# exported. "Lost" counts what a shutdown could not hand over: requests cut off at the deadline.
PENDING_FLUSHED = Counter(
    "pending_operations_flushed_total", "Pending operations handed over at shutdown, by kind", ("kind",)
)
PENDING_LOST = Counter(
    "pending_operations_lost_total", "Operations cut off at shutdown (in-flight requests past the deadline)", ("kind",)
)

# Requests as operators expect them (RequestMetricsMiddleware). `route` is the URL pattern that
# served the request (`api/proposals/<int:proposal_id>/votes/`), never the raw path: one series
# per endpoint, whatever the ids. `status` is the class ("2xx", ..., "5xx").
HTTP_REQUESTS = Counter(
    "http_requests_total", "HTTP requests answered, by route, method and status class", ("route", "method", "status")
)
HTTP_REQUEST_DURATION = Histogram(
    "http_request_duration_seconds",
    "Seconds from the request entering the middleware to its response, by route and method",
    ("route", "method"),
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
# Summed over the live workers' files: a dead worker's last value does not linger.
HTTP_REQUESTS_IN_FLIGHT = Gauge("http_requests_in_flight", "Requests being served now", multiprocess_mode="livesum")
HTTP_UNAVAILABLE = Counter(
    "http_unavailable_total", "503 responses by the unreachable dependency that caused them", ("dependency", "route")
)


class WrittenFilesCollector(multiprocess.MultiProcessCollector):
    """The files of the processes' samples, less those a process is creating at this instant.

    prometheus-client creates a process's file, then sizes it: a scrape in between reads 0 bytes,
    and the stock collector raises on it, losing every metric of the scrape (a worker's first
    counted request races the scrapes). A process killed in that window would leave the empty
    file, and break every scrape, until the instance restarts."""

    def __init__(self, registry: CollectorRegistry, path: str):
        self.directory = path
        super().__init__(registry, path)

    def collect(self):
        return self.merge([path for path in glob.glob(os.path.join(self.directory, "*.db")) if _written(path)])


def _written(path: str) -> bool:
    try:
        return os.path.getsize(path) > 0
    except FileNotFoundError:  # a live gauge's file, removed as its process was reaped
        return False


def metrics_registry() -> CollectorRegistry:
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        registry = CollectorRegistry()
        WrittenFilesCollector(registry, path)
        return registry
    return REGISTRY


def metrics_allowed(request: HttpRequest) -> bool:
    from lifecycle.conf import lifecycle_settings

    if lifecycle_settings.METRICS_PUBLIC:
        return True
    token = lifecycle_settings.METRICS_TOKEN
    if token and hmac.compare_digest(request.headers.get("Authorization", ""), f"Bearer {token}"):
        return True
    # Through the public ingress every request carries the balancer's X-Forwarded-For (a client
    # cannot remove it); a scrape of the pod itself has none.
    return "HTTP_X_FORWARDED_FOR" not in request.META and "HTTP_FORWARDED" not in request.META


def metrics(request: HttpRequest) -> HttpResponse:
    if not metrics_allowed(request):
        # As if there were nothing here: the ingress does not advertise it.
        return HttpResponse(status=404)
    return HttpResponse(generate_latest(metrics_registry()), content_type=CONTENT_TYPE_LATEST)

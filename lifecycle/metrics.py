"""Prometheus metrics of an instance's life, and the /metrics view (multiprocess mode).

Under gunicorn every worker is a process: prometheus-client writes each process's samples to
files in PROMETHEUS_MULTIPROC_DIR (emptied by the master at start, see omk/gunicorn.conf.py) and
/metrics aggregates them. Without that variable (tests, manage.py) the default registry is used.

Other helpers' metrics (locks_*, lock_contention_seconds, outbox_*, hive_*) live in their modules.
"""

from __future__ import annotations

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


def _existing(name: str):
    # Two modules may count the same thing (e.g. recovery and the sessions manager): share one.
    return REGISTRY._names_to_collectors.get(name)


def counter(name: str, documentation: str, labelnames: tuple[str, ...] = ()) -> Counter:
    return _existing(name) or Counter(name, documentation, labelnames)


def histogram(name: str, documentation: str, buckets: tuple[float, ...]) -> Histogram:
    return _existing(name) or Histogram(name, documentation, buckets=buckets)


INSTANCE_STARTUP = counter("instance_startup_total", "Instances that registered and started", ("kind",))
INSTANCE_SHUTDOWN = counter("instance_shutdown_total", "Instance shutdowns, by outcome", ("kind", "outcome"))
INSTANCE_SHUTDOWN_DURATION = histogram(
    "instance_shutdown_duration_seconds",
    "Seconds from SIGTERM to the end of the shutdown sequence",
    (0.5, 1, 2, 5, 10, 20, 30, 60),
)
RECOVERY_SUCCESS = counter("instance_recovery_success_total", "Recovery passes whose steps all succeeded")
RECOVERY_FAILURE = counter("instance_recovery_failure_total", "Recovery passes with a failed or timed-out step")
# Shared with hive.metrics (it counts the histories it rebuilds); defined here too so /metrics
# always lists it.
SESSIONS_RECOVERED = counter("sessions_recovered_total", "Sessions recovered after their instance or Redis went away")
# Reachable sessions as counted by the last recovery pass (any process).
SESSIONS_ACTIVE = _existing("sessions_active") or Gauge(
    "sessions_active", "Sessions reachable in Redis at the last recovery pass", multiprocess_mode="mostrecent"
)
# Work an instance hands over when it stops: jobs and messages handed back, outbox events
# exported. "Lost" counts what a shutdown could not hand over: requests cut off at the deadline.
PENDING_FLUSHED = counter(
    "pending_operations_flushed_total", "Pending operations handed over at shutdown, by kind", ("kind",)
)
PENDING_LOST = counter(
    "pending_operations_lost_total", "Operations cut off at shutdown (in-flight requests past the deadline)", ("kind",)
)


def metrics_registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def metrics(request: HttpRequest) -> HttpResponse:
    return HttpResponse(generate_latest(metrics_registry()), content_type=CONTENT_TYPE_LATEST)

"""Prometheus metrics of an instance's life, and the /metrics view (multiprocess mode).

Under gunicorn every worker is a process: prometheus-client writes each process's samples to
files in PROMETHEUS_MULTIPROC_DIR (emptied by the master at start, see omk/gunicorn.conf.py) and
/metrics aggregates them. Without that variable (tests, manage.py) the default registry is used.

Other helpers' metrics (locks_*, sessions_active, pending_operations_*) live in their modules.
"""

from __future__ import annotations

import os

from django.http import HttpRequest, HttpResponse
from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
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
SESSIONS_RECOVERED = counter("sessions_recovered_total", "Sessions found reachable in Redis by recovery passes")


def metrics_registry() -> CollectorRegistry:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return registry
    return REGISTRY


def metrics(request: HttpRequest) -> HttpResponse:
    return HttpResponse(generate_latest(metrics_registry()), content_type=CONTENT_TYPE_LATEST)

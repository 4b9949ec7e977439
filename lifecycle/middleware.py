"""The instance's middleware: request context for logs and the shutdown, probes ahead of the stack."""

import logging
import os
import re
import time
from collections.abc import Callable

from asgiref.sync import async_to_sync, iscoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.urls import resolve
from prometheus_client import Counter, Histogram
from redis.exceptions import RedisError

from lifecycle import inflight
from lifecycle.conf import lifecycle_settings
from lifecycle.drain import is_draining
from lifecycle.logs import request_id_var
from lifecycle.metrics import HTTP_REQUEST_DURATION, HTTP_REQUESTS, HTTP_REQUESTS_IN_FLIGHT, HTTP_UNAVAILABLE
from lifecycle.registry import INSTANCE_ID_ENV, heartbeat_write

logger = logging.getLogger(__name__)

PROBE_PATHS = frozenset({"/health", "/ready", "/metrics"})
# Answered ahead of the stack too: the worker service's wake-up, a machine's POST with no session,
# no CSRF token and the service's run.app address as Host (lifecycle.wake).
AHEAD_PATHS = PROBE_PATHS | {"/internal/wake"}
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class ProbeMiddleware:
    """Serve the probes ahead of the rest of the stack.

    The kubelet sends the pod IP as Host (not in ALLOWED_HOSTS), and a liveness probe must not
    touch the session store: a Redis outage would otherwise restart every pod.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info in AHEAD_PATHS:
            match = resolve(request.path_info)
            view = async_to_sync(match.func) if iscoroutinefunction(match.func) else match.func
            return view(request, *match.args, **match.kwargs)
        return self.get_response(request)


class RequestContextMiddleware:
    """Outermost: a request id for the logs (the load balancer's, else a new one) and the
    in-flight count the shutdown report shows."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        meta = request.META
        header = meta.get("HTTP_X_REQUEST_ID") or meta.get("HTTP_X_CLOUD_TRACE_CONTEXT")
        # Only a short, plain id is taken from the client: it goes into every log line and back
        # into a response header, where control characters or a megabyte of text do harm.
        candidate = header.split("/", 1)[0] if header else None
        request_id = candidate if candidate and REQUEST_ID.fullmatch(candidate) else os.urandom(16).hex()
        token = request_id_var.set(request_id)
        inflight.enter()
        try:
            response = self.get_response(request)
        finally:
            counts = inflight.leave()
            if counts is not None and counts[0] == 0:
                idle_heartbeat_write(generation=counts[1])
            request_id_var.reset(token)
        response["X-Request-ID"] = request_id
        return response


def idle_heartbeat_write(*, generation: int) -> None:
    """The last request in flight has ended: on request-based CPU, write the idle beat now, the
    last moment this instance surely has CPU (its heartbeat thread may not run again before the
    next request). Best effort: a failure only leaves the shorter beat in place."""
    # Where CPU is always allocated (no TTL) this runs after every request that leaves none in
    # flight: it must cost nothing then.
    ttl = lifecycle_settings.IDLE_HEARTBEAT_TTL
    if not ttl:
        return
    instance_id = os.environ.get(INSTANCE_ID_ENV)
    if not instance_id:
        return
    from core.redis import redis_client

    state = "draining" if is_draining() else "ready"
    try:
        heartbeat_write(redis_client(), instance_id=instance_id, state=state, ttl=ttl, generation=generation)
    except RedisError as exc:
        logger.warning("Idle heartbeat failed: %r", exc)


# Any other method is one label value, so a client cannot mint series.
KNOWN_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# A request no URL pattern matched (a 404, or answered by a middleware before resolving).
UNMATCHED = "<unmatched>"


def request_route(request: HttpRequest) -> str:
    match = getattr(request, "resolver_match", None)
    if match is None:
        return UNMATCHED
    # The home page's pattern is the empty string.
    return match.route or "/"


class RequestMetricsMiddleware:
    """Request count, latency and in-flight gauge, labelled by route (the URL pattern), method and
    status class, and 503s by the dependency that caused them. After ProbeMiddleware: probes and
    scrapes are not requests an operator wants in these figures."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response
        # The labelled series by (route, method, status class): `labels()` takes a lock and
        # rebuilds the key on every call. Bounded as the series are: routes are URL patterns.
        self._series: dict[tuple[str, str, int], tuple[Histogram, Counter]] = {}

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        method = request.method if request.method in KNOWN_METHODS else "other"
        HTTP_REQUESTS_IN_FLIGHT.inc()
        try:
            response = self.get_response(request)
        finally:
            HTTP_REQUESTS_IN_FLIGHT.dec()
        route = request_route(request)
        key = (route, method, response.status_code // 100)
        series = self._series.get(key)
        if series is None:
            series = HTTP_REQUEST_DURATION.labels(route, method), HTTP_REQUESTS.labels(route, method, f"{key[2]}xx")
            self._series[key] = series
        series[0].observe(time.perf_counter() - started)
        series[1].inc()
        dependency = getattr(response, "unavailable_dependency", None)
        if dependency is not None:
            HTTP_UNAVAILABLE.labels(dependency, route).inc()
        return response

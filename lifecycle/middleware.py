"""The instance's middleware: request context for logs and the shutdown, probes ahead of the stack."""

import re
import time
import uuid
from collections.abc import Callable

from asgiref.sync import async_to_sync, iscoroutinefunction
from django.http import HttpRequest, HttpResponse
from django.urls import resolve

from lifecycle import inflight
from lifecycle.logs import request_id_var
from lifecycle.metrics import HTTP_REQUEST_DURATION, HTTP_REQUESTS, HTTP_REQUESTS_IN_FLIGHT, HTTP_UNAVAILABLE

PROBE_PATHS = frozenset({"/health", "/ready", "/metrics"})
REQUEST_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")


class ProbeMiddleware:
    """Serve the probes ahead of the rest of the stack.

    The kubelet sends the pod IP as Host (not in ALLOWED_HOSTS), and a liveness probe must not
    touch the session store: a Redis outage would otherwise restart every pod.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if request.path_info in PROBE_PATHS:
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
        header = request.META.get("HTTP_X_REQUEST_ID") or request.META.get("HTTP_X_CLOUD_TRACE_CONTEXT", "")
        candidate = header.split("/", 1)[0]
        # Only a short, plain id is taken from the client: it goes into every log line and back
        # into a response header, where control characters or a megabyte of text do harm.
        request_id = candidate if REQUEST_ID.fullmatch(candidate) else uuid.uuid4().hex
        token = request_id_var.set(request_id)
        inflight.enter()
        try:
            response = self.get_response(request)
        finally:
            inflight.leave()
            request_id_var.reset(token)
        response["X-Request-ID"] = request_id
        return response


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

    def __call__(self, request: HttpRequest) -> HttpResponse:
        started = time.perf_counter()
        method = request.method if request.method in KNOWN_METHODS else "other"
        HTTP_REQUESTS_IN_FLIGHT.inc()
        try:
            response = self.get_response(request)
        finally:
            HTTP_REQUESTS_IN_FLIGHT.dec()
        route = request_route(request)
        HTTP_REQUEST_DURATION.labels(route, method).observe(time.perf_counter() - started)
        HTTP_REQUESTS.labels(route, method, f"{response.status_code // 100}xx").inc()
        dependency = getattr(response, "unavailable_dependency", None)
        if dependency is not None:
            HTTP_UNAVAILABLE.labels(dependency, route).inc()
        return response

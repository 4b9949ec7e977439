"""Middleware every app relies on: a dependency outage is a 503, and the JSON API's request guards."""

import json
import logging
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse, JsonResponse

from core.conf import core_settings
from core.dependencies import unavailable_dependency
from core.errors import error_body
from core.responses import service_unavailable

logger = logging.getLogger(__name__)


class ApiGuardMiddleware:
    """Under /api/: refuse oversized bodies with 413 and repeated query parameters with 400, and
    make Django's own 404/405 JSON.

    The size is checked from Content-Length before the body is read, so a 10 MB upload costs
    nothing and never reaches Django's 2.5 MB limit (which would answer a generic 400). No API
    query parameter takes several values: given twice, django-ninja would silently use the last.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        if not request.path_info.startswith(core_settings.API_PREFIX):
            return self.get_response(request)
        limit = core_settings.API_MAX_BODY_BYTES
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            return JsonResponse(error_body(400, "The Content-Length header is not a number."), status=400)
        if length > limit:
            detail = f"The request body is {length} bytes; the limit is {limit} bytes."
            return JsonResponse(error_body(413, detail, fields={"body": [detail]}), status=413)
        repeated = {name: len(values) for name, values in sorted(request.GET.lists()) if len(values) > 1}
        if repeated:
            fields = {name: [f"Given {times} times; send it once."] for name, times in repeated.items()}
            detail = f"Query parameters given more than once: {', '.join(repeated)}."
            return JsonResponse(error_body(400, detail, fields=fields), status=400)
        response = self.get_response(request)
        if response.status_code in (404, 405) and not response.get("Content-Type", "").startswith("application/json"):
            return self._as_json(request, response)
        return response

    @staticmethod
    def _as_json(request: HttpRequest, response: HttpResponse) -> HttpResponse:
        if response.status_code == 404:
            detail = f"No API endpoint at {request.path}."
        else:
            detail = f"Method {request.method} is not allowed here; allowed: {response.get('Allow', '')}."
        replaced = HttpResponse(json.dumps(error_body(response.status_code, detail)), status=response.status_code)
        replaced["Content-Type"] = "application/json"
        if "Allow" in response:
            replaced["Allow"] = response["Allow"]
        return replaced


class DependencyUnavailableMiddleware:
    """Turn a PostgreSQL or Redis outage raised by a view into 503 with Retry-After."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        return self.get_response(request)

    def process_exception(self, request: HttpRequest, exception: Exception) -> HttpResponse | None:
        dependency = unavailable_dependency(exception)
        if dependency is None:
            return None
        # The cause, for the operator: the client's 503 names only the dependency.
        logger.warning("%s unavailable on %s: %s: %s", dependency, request.path, type(exception).__name__, exception)
        return service_unavailable(request, dependency)

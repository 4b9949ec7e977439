"""The 503 a client gets when PostgreSQL or Redis is unreachable: short, retryable, no traceback."""

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.html import escape

from core.conf import core_settings


def wants_json(request: HttpRequest) -> bool:
    accept = request.headers.get("Accept", "")
    return request.path.startswith("/api/") or ("json" in accept and "html" not in accept)


def service_unavailable(request: HttpRequest, dependency: str) -> HttpResponse:
    retry_after = str(core_settings.RETRY_AFTER_SECONDS)
    detail = f"A backing service ({dependency}) is unreachable for a moment. Please retry in {retry_after} seconds."
    if wants_json(request):
        response: HttpResponse = JsonResponse(
            {"error": "service_unavailable", "detail": detail, "dependency": dependency}, status=503
        )
    else:
        response = HttpResponse(
            "<!doctype html><title>Temporarily unavailable</title>"
            f"<h1>Temporarily unavailable</h1><p>{escape(detail)}</p>",
            status=503,
        )
    response["Retry-After"] = retry_after
    # For the request metrics (lifecycle.middleware.RequestMetricsMiddleware): 503s by dependency.
    response.unavailable_dependency = dependency  # type: ignore[attr-defined]
    return response

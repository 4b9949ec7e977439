import logging
import sys

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.csrf import requires_csrf_token
from health_check.views import HealthCheckView

from core.dependencies import unavailable_dependency
from core.responses import service_unavailable, wants_json

logger = logging.getLogger("lifecycle.ready")
# Checks that fail by design during an instance's life (draining, start-up recovery).
EXPECTED = frozenset({"draining", "recovery"})


def health(request: HttpRequest) -> HttpResponse:
    """Liveness: the process answers. No dependency is checked, on purpose."""
    return JsonResponse({"status": "ok"})


class ReadinessView(HealthCheckView):
    """Readiness: 200 when PostgreSQL and Redis answer and the instance is not draining.

    django-health-check answers 500 on failure; a load balancer and Kubernetes expect 503.
    """

    checks = (
        "lifecycle.health.DatabaseCheck",
        "lifecycle.health.RedisCheck",
        "lifecycle.health.NotDrainingCheck",
        "lifecycle.health.RecoveredCheck",
    )

    async def get(self, request, *args, **kwargs):
        await super().get(request, *args, **kwargs)
        failed = any(result.error for result in self.results)
        return self.render_to_response_json(503 if failed else 200)

    def render_to_response_json(self, status: int) -> JsonResponse:
        checks = {result.check.name: "ok" if result.error is None else str(result.error) for result in self.results}
        body = {"status": "ok" if status == 200 else "unavailable", "checks": checks}
        response = JsonResponse(body, status=status)
        if status == 503:
            response["Retry-After"] = "1"
            # Draining and recovering instances answer 503 on purpose, at every probe: that is no
            # error line each time (Django logs every 5xx not marked with its private, undeclared
            # `_has_been_logged`). A failed dependency is a warning.
            response._has_been_logged = True  # type: ignore[attr-defined]
            failed = [f"{name}: {state}" for name, state in checks.items() if state != "ok" and name not in EXPECTED]
            if failed:
                logger.warning("Not ready: %s", "; ".join(failed))
        return response


ready = ReadinessView.as_view()


@requires_csrf_token
def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: an unreachable dependency is a 503, anything else a plain 500."""
    dependency = unavailable_dependency(sys.exc_info()[1])
    if dependency is not None:
        return service_unavailable(request, dependency)
    if wants_json(request):
        return JsonResponse({"error": "server_error", "detail": "Internal server error."}, status=500)
    return HttpResponse("<!doctype html><title>Server error</title><h1>Server error (500)</h1>", status=500)

from django.contrib.sessions.middleware import SessionMiddleware as DjangoSessionMiddleware
from django.http import HttpRequest, HttpResponse

from core.dependencies import unavailable_dependency
from core.responses import service_unavailable


class SessionMiddleware(DjangoSessionMiddleware):
    """Django's SessionMiddleware; a Redis outage while saving the session is a 503, not a 500."""

    def process_response(self, request: HttpRequest, response: HttpResponse) -> HttpResponse:
        try:
            return super().process_response(request, response)
        except Exception as exc:
            dependency = unavailable_dependency(exc)
            if dependency is None:
                raise
            return service_unavailable(request, dependency)

"""Views on the session for the session engine's tests: an async one, and one that fails."""

from django.http import HttpRequest, JsonResponse
from django.urls import path


async def whoami(request: HttpRequest) -> JsonResponse:
    user = await request.auser()  # the session's aget: SessionStore.aload
    return JsonResponse({"username": user.get_username() if user.is_authenticated else None})


def fails(request: HttpRequest) -> JsonResponse:
    """Reads the session, then fails: a 500, after which the session is not saved."""
    request.session.get("anything")
    raise RuntimeError("a bug after the session was read")


urlpatterns = [path("whoami/", whoami), path("fails/", fails)]

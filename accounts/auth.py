"""The API's two ways in: a bearer token (machine clients) or the session cookie (browsers)."""

from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse
from django.middleware.csrf import CsrfViewMiddleware
from ninja.errors import AuthenticationError, HttpError
from ninja.security import APIKeyCookie, HttpBearer

from accounts.selectors import TokenExpired, api_token_user


class BearerTokenAuth(HttpBearer):
    def authenticate(self, request: HttpRequest, token: str) -> Any:
        try:
            user = api_token_user(raw=token)
        except TokenExpired as exc:
            raise AuthenticationError(message=str(exc)) from None
        if user is None:
            # A token was sent and is wrong: say so, rather than fall through to the session
            # check and answer something unrelated.
            raise AuthenticationError(message="The bearer token is invalid or has been revoked.")
        # Code below the API (services, templates) reads request.user like for a session user.
        request.user = user
        return user


def _not_called(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
    """Stands in for the view and for get_response in the CSRF check below: the middleware only
    reads the view's csrf_exempt flag (unset, so it checks) and calls neither."""
    raise AssertionError("CsrfViewMiddleware called the stand-in view.")


class SessionCsrfAuth(APIKeyCookie):
    """Django's session, with Django's CSRF check on unsafe methods.

    Unlike ninja's SessionAuth, CSRF is checked only when the session actually authenticates:
    a request without a logged-in session is a 401 (not a 403 about a missing CSRF token).
    """

    param_name: str = settings.SESSION_COOKIE_NAME

    def __init__(self) -> None:
        super().__init__(csrf=False)

    def authenticate(self, request: HttpRequest, key: str | None) -> Any:
        user = getattr(request, "user", None)
        if user is None or not user.is_authenticated:
            return None
        if request.method not in ("GET", "HEAD", "OPTIONS", "TRACE"):
            check = CsrfViewMiddleware(_not_called)
            # The flag CsrfViewMiddleware sets on a request it has accepted, an attribute
            # django-stubs does not declare: cleared so that this check always runs.
            request.csrf_processing_done = False  # type: ignore[attr-defined]
            check.process_request(request)
            if check.process_view(request, _not_called, (), {}) is not None:
                raise HttpError(
                    403,
                    "CSRF check failed: send the csrftoken cookie's value in the X-CSRFToken header "
                    "(or use a bearer token).",
                )
        return user


api_auth = [BearerTokenAuth(), SessionCsrfAuth()]

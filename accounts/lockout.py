"""The answer to a login while its username or address is locked out (django-axes), on every
login path: the API's, the /login/ page and the admin's. 429 with Retry-After, JSON under the API
and for JSON clients, a short page otherwise; the same words whichever lock applies, so the
answer does not tell whether the username exists."""

from __future__ import annotations

from axes.handlers.proxy import AxesProxyHandler
from django.conf import settings
from django.core.signals import setting_changed
from django.dispatch import receiver
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils.html import escape

from core.errors import error_body
from core.responses import wants_json


def cool_off_seconds() -> int:
    return int(settings.AXES_COOLOFF_TIME.total_seconds())


def lockout_detail() -> str:
    minutes = max(cool_off_seconds() // 60, 1)
    return (
        f"Too many failed logins for this account or from this address: logins are refused for {minutes} "
        "minutes after the last failure."
    )


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict | None = None
) -> HttpResponse:
    detail = lockout_detail()
    if wants_json(request):
        response: HttpResponse = JsonResponse(error_body(429, detail), status=429)
    else:
        response = HttpResponse(
            "<!doctype html><title>Too many failed logins</title>"
            f"<h1>Too many failed logins</h1><p>{escape(detail)}</p>",
            status=429,
        )
    response["Retry-After"] = str(cool_off_seconds())
    return response


@receiver(setting_changed)
def _reset_lockout_handler(*, setting: str, **kwargs: object) -> None:
    # django-axes keeps its handler, and with it the cache it counts failures in, from the first
    # login on: a changed CACHES (tests pointing Redis elsewhere) must reach it too.
    if setting == "CACHES" or setting.startswith("AXES_"):
        AxesProxyHandler.get_implementation(force=True)

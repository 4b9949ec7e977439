"""The service's one JSON API, mounted at /api/ (schema /api/openapi.json, docs /api/docs).

The routers are the apps' (accounts, governance, hive); every error is answered in one shape
(core.handlers).
"""

import json
from collections.abc import Callable
from functools import wraps
from typing import Any

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from ninja import NinjaAPI, Swagger

from accounts.auth import api_auth
from core.conf import core_settings
from core.handlers import install_error_handlers
from core.throttling import api_throttles


def docs_guard(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """The docs page and schema for everyone, or (OMK_API_DOCS_PUBLIC = False) staff only."""
    staff_only = staff_member_required(view)

    @wraps(view)
    def guarded(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        if core_settings.API_DOCS_PUBLIC:
            return view(request, *args, **kwargs)
        return staff_only(request, *args, **kwargs)

    return guarded


class LocalSwagger(Swagger):
    """Swagger UI from the service's own static files (ninja's, found through TEMPLATES' DIRS and
    STATICFILES_DIRS in settings/base.py). Ninja renders its local template only when "ninja" is
    in INSTALLED_APPS, and falls back to a CDN otherwise; the service keeps it out of
    INSTALLED_APPS so that django.setup() does not import it."""

    def render_page(self, request: HttpRequest, api: NinjaAPI, **kwargs: Any) -> HttpResponse:
        self.settings["url"] = self.get_openapi_url(api, kwargs)
        context = {
            "swagger_settings": json.dumps(self.settings, indent=1),
            "api": api,
            # The session login's CSRF check is the API's own (accounts.auth), not Swagger's.
            "add_csrf": False,
        }
        return render(request, self.template, context)


api = NinjaAPI(
    title="OMK Hive API",
    version="1",
    description=(
        "Governance, private sale, staking and the hive. Authenticate with `Authorization: Bearer "
        "<token>` (`manage.py issue_token USERNAME`) or the session cookie from POST /api/auth/login "
        "(unsafe methods then need the X-CSRFToken header). Creating POSTs accept an Idempotency-Key."
    ),
    urls_namespace="api",
    docs=LocalSwagger(),
    docs_decorator=docs_guard,
    auth=api_auth,
    # Per user and endpoint class, and per address without a user; 429 `throttled` with Retry-After.
    throttle=api_throttles(),
)

install_error_handlers(api)
api.add_router("/auth/", "accounts.api.router")
api.add_router("/", "governance.api.router")
api.add_router("/", "hive.api.router")

"""The service's one JSON API, mounted at /api/ (schema /api/openapi.json, docs /api/docs).

The routers are the apps' (accounts, governance, hive); every error is answered in one shape
(core.handlers).
"""

from collections.abc import Callable
from functools import wraps

from django.contrib.admin.views.decorators import staff_member_required
from django.http import HttpRequest, HttpResponse
from ninja import NinjaAPI

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


api = NinjaAPI(
    title="OMK Hive API",
    version="1",
    description=(
        "Governance, private sale, staking and the hive. Authenticate with `Authorization: Bearer "
        "<token>` (`manage.py issue_token USERNAME`) or the session cookie from POST /api/auth/login "
        "(unsafe methods then need the X-CSRFToken header). Creating POSTs accept an Idempotency-Key."
    ),
    urls_namespace="api",
    docs_decorator=docs_guard,
    auth=api_auth,
    # Per user and endpoint class, and per address without a user; 429 `throttled` with Retry-After.
    throttle=api_throttles(),
)

install_error_handlers(api)
api.add_router("/auth/", "accounts.api.router")
api.add_router("/", "governance.api.router")
api.add_router("/", "hive.api.router")

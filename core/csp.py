"""The Content-Security-Policy header of every response, from `settings.CONTENT_SECURITY_POLICY`.

The setting keeps django-csp 4's shape (the service used it before)::

    CONTENT_SECURITY_POLICY = {
        "EXCLUDE_URL_PREFIXES": ["/api/docs"],
        "DIRECTIVES": {"default-src": ["'self'"], "upgrade-insecure-requests": True, ...},
    }

and `CONTENT_SECURITY_POLICY_REPORT_ONLY` the same for Content-Security-Policy-Report-Only. A
directive's value is a list of sources, or True for a directive without one; None or False
leaves it out. The policy is static (no nonces: no template asks for one), so the header is
built once per process and again only after `setting_changed`; django-csp built it twice on
every response, a sixth of a trivial request's CPU. As with django-csp: a header a view already
set is kept, and with DEBUG the 404 and 500 pages (Django's debug pages run inline scripts) get
none.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.core.signals import setting_changed
from django.http import HttpRequest, HttpResponse

HEADERS = {
    "CONTENT_SECURITY_POLICY": "Content-Security-Policy",
    "CONTENT_SECURITY_POLICY_REPORT_ONLY": "Content-Security-Policy-Report-Only",
}

# (header, value, excluded path prefixes) for each policy configured; None: not built yet.
_policies: list[tuple[str, str, tuple[str, ...]]] | None = None


def policy_header(directives: dict[str, Any]) -> str:
    """The header's value: `name source source; name; ...` in the order given."""
    parts = []
    for name, value in directives.items():
        if value is None or value is False:
            continue
        if value is True:
            parts.append(name)
            continue
        sources = [value] if isinstance(value, str) else list(dict.fromkeys(value))
        parts.append(f"{name} {' '.join(sources)}" if sources else name)
    return "; ".join(parts)


def policies() -> list[tuple[str, str, tuple[str, ...]]]:
    global _policies
    built = _policies
    if built is None:
        built = []
        for setting, header in HEADERS.items():
            config = getattr(settings, setting, None) or {}
            value = policy_header(config.get("DIRECTIVES", {}))
            if value:
                built.append((header, value, tuple(config.get("EXCLUDE_URL_PREFIXES", ()))))
        _policies = built
    return built


def _settings_changed(*, setting: str, **kwargs: Any) -> None:
    global _policies
    if setting in HEADERS:
        _policies = None


setting_changed.connect(_settings_changed, dispatch_uid="core.csp.policies")


class ContentSecurityPolicyMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]):
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.get_response(request)
        if settings.DEBUG and response.status_code in (404, 500):
            return response
        for header, value, excluded in policies():
            if header not in response and not request.path_info.startswith(excluded):
                response[header] = value
        return response

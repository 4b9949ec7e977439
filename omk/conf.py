"""The API's settings, each with its default (read through `api_settings`)."""

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Largest request body accepted under /api/ (bytes); larger bodies get 413 before any parsing.
    "MAX_BODY_BYTES": 64 * 1024,
    # URL prefix of the JSON API: errors under it are JSON even when Django itself answers.
    "PREFIX": "/api/",
}


class ApiSettings:
    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(name)
        return getattr(settings, f"API_{name}", DEFAULTS[name])


api_settings = ApiSettings()

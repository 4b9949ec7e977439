"""The lifecycle app's settings, each with its default (read through `lifecycle_settings`)."""

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Seconds a client is told to wait (Retry-After) when PostgreSQL or Redis is unreachable.
    "RETRY_AFTER_SECONDS": 5,
    # Directory for pidfiles and drain flags of the instances on this host.
    "RUN_DIR": "/tmp/omk",
}


class LifecycleSettings:
    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(name)
        return getattr(settings, f"LIFECYCLE_{name}", DEFAULTS[name])


lifecycle_settings = LifecycleSettings()

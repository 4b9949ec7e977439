"""Idempotency settings, each with its default (read through `idempotency_settings`)."""

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Tests only: seconds a creating POST sleeps after COMMIT, before its response is sent (the
    # window in which an instance's death must lose nothing and duplicate nothing).
    "PAUSE_AFTER_COMMIT": 0.0,
    # Seconds a key (and its stored response) is kept: clients retry within minutes. The worker
    # purges older keys hourly; effects outside PostgreSQL keep their dedupe marks as long.
    "RETENTION_SECONDS": 24 * 3600,
}


class IdempotencySettings:
    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(name)
        return getattr(settings, f"IDEMPOTENCY_{name}", DEFAULTS[name])


idempotency_settings = IdempotencySettings()

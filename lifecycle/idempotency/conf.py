"""Idempotency settings: `idempotency_settings.X` reads `settings.IDEMPOTENCY_X`, else the default here."""

from core.conf import AppSettings


class IdempotencySettings(AppSettings):
    prefix = "IDEMPOTENCY_"
    # Tests only: seconds a creating POST sleeps after COMMIT, before its response is sent (the
    # window in which an instance's death must lose nothing and duplicate nothing).
    PAUSE_AFTER_COMMIT: float = 0.0
    # Seconds a key (and its stored response) is kept: clients retry within minutes. The worker
    # purges older keys hourly; effects outside PostgreSQL keep their dedupe marks as long.
    RETENTION_SECONDS: int = 24 * 3600


idempotency_settings = IdempotencySettings()

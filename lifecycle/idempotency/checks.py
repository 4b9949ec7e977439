"""System checks of the idempotency keys (ids idempotency.E001)."""

from django.core.checks import Error, Tags, register

from lifecycle.idempotency.conf import idempotency_settings


@register(Tags.compatibility)
def check_idempotency_settings(app_configs, **kwargs):
    errors = []
    retention = idempotency_settings.raw("RETENTION_SECONDS")
    # Clients retry within minutes: a key kept for less than an hour could be purged between a
    # request and its retry, and the retry would act a second time.
    if isinstance(retention, bool) or not isinstance(retention, int) or retention < 3600:
        errors.append(
            Error(
                f"IDEMPOTENCY_RETENTION_SECONDS must be a whole number of at least 3600, got {retention!r}.",
                id="idempotency.E001",
            )
        )
    return errors

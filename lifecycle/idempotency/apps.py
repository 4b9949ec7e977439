from django.apps import AppConfig


class IdempotencyConfig(AppConfig):
    name = "lifecycle.idempotency"
    label = "idempotency"
    verbose_name = "Idempotency keys"

    def ready(self) -> None:
        # Registers the system checks, and the metrics so that /metrics lists them from the start.
        from lifecycle.idempotency import checks, metrics  # noqa: F401

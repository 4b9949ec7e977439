from django.apps import AppConfig


class IdempotencyConfig(AppConfig):
    name = "lifecycle.idempotency"
    label = "idempotency"
    verbose_name = "Idempotency keys"

    def ready(self) -> None:
        from lifecycle.idempotency import checks  # noqa: F401  (registers the system checks)

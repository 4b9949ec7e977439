from django.apps import AppConfig


class IdempotencyConfig(AppConfig):
    name = "lifecycle.idempotency"
    label = "idempotency"
    verbose_name = "Idempotency keys"

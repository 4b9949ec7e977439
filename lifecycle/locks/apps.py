from django.apps import AppConfig


class LocksConfig(AppConfig):
    name = "lifecycle.locks"
    label = "locks"
    verbose_name = "Distributed locks"

    def ready(self) -> None:
        from lifecycle.locks import checks  # noqa: F401  (registers the system checks)

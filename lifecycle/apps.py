from django.apps import AppConfig


class LifecycleConfig(AppConfig):
    name = "lifecycle"
    verbose_name = "Instance lifecycle"

    def ready(self) -> None:
        from lifecycle import checks  # noqa: F401  (registers the system checks)

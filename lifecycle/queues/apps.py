from django.apps import AppConfig


class QueuesConfig(AppConfig):
    name = "lifecycle.queues"
    label = "queues"
    verbose_name = "Bee message queues"

    def ready(self) -> None:
        # Registers the system checks, and the metrics so that /metrics lists them from the start.
        from lifecycle.queues import checks, metrics  # noqa: F401

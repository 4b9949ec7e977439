from django.apps import AppConfig


class QueuesConfig(AppConfig):
    name = "lifecycle.queues"
    label = "queues"
    verbose_name = "Bee message queues"

    def ready(self) -> None:
        from lifecycle.queues import checks  # noqa: F401  (registers the system checks)

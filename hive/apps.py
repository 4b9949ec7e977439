from django.apps import AppConfig


class HiveConfig(AppConfig):
    name = "hive"
    verbose_name = "Hive: conversations, board, bee queues"

    def ready(self) -> None:
        from hive import checks  # noqa: F401  (registers the system checks)

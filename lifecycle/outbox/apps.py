from django.apps import AppConfig


class OutboxConfig(AppConfig):
    # A sub-app of lifecycle with its own label and migrations, so the outbox's schema history
    # never interleaves with the other lifecycle tables (registry, jobs) built on other branches.
    name = "lifecycle.outbox"
    label = "outbox"
    verbose_name = "Analytics outbox"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        from lifecycle.outbox import checks  # noqa: F401  (registers the system checks)

from django.apps import AppConfig


class SessionsConfig(AppConfig):
    name = "lifecycle.sessions"
    label = "lifecycle_sessions"
    verbose_name = "Sessions in Redis"

    def ready(self) -> None:
        # Registers the system checks, and the metrics so that /metrics lists them from the start.
        from lifecycle.sessions import checks, metrics  # noqa: F401

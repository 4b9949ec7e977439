"""System checks: bad lifecycle configuration is caught at start, with stable ids."""

from django.conf import settings
from django.core.checks import Error, Tags, register

from lifecycle.platform import detect_platform


@register(Tags.compatibility)
def check_platform(app_configs, **kwargs):
    try:
        detect_platform()
    except ValueError as exc:
        hint = "Set TERMINATION_GRACE_PERIOD to the pod's grace period in seconds."
        return [Error(str(exc), id="lifecycle.E001", hint=hint)]
    return []


@register(Tags.caches)
def check_session_store(app_configs, **kwargs):
    errors = []
    backend = settings.CACHES.get(getattr(settings, "SESSION_CACHE_ALIAS", "default"), {}).get("BACKEND", "")
    if "redis" not in backend.lower():
        errors.append(
            Error(
                "Sessions must live in Redis so that any instance continues any user's session.",
                id="lifecycle.E002",
                hint="Point the session cache alias at django_redis.cache.RedisCache.",
            )
        )
    if settings.SESSION_ENGINE not in ("lifecycle.sessions.backend", "django.contrib.sessions.backends.cache"):
        errors.append(
            Error(
                f"SESSION_ENGINE is {settings.SESSION_ENGINE!r}: sessions would not be shared by instances in Redis.",
                id="lifecycle.E003",
                hint="Use lifecycle.sessions.backend.",
            )
        )
    return errors

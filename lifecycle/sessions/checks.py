"""System checks of the session stores (ids sessions.E001-E003)."""

from django.conf import settings
from django.core.checks import Error, Tags, register

from lifecycle.sessions.conf import sessions_settings


@register(Tags.caches)
def check_session_store(app_configs, **kwargs):
    errors = []
    backend = settings.CACHES.get(getattr(settings, "SESSION_CACHE_ALIAS", "default"), {}).get("BACKEND", "")
    if "redis" not in backend.lower():
        errors.append(
            Error(
                "Sessions must live in Redis so that any instance continues any user's session.",
                id="sessions.E001",
                hint="Point the session cache alias at django_redis.cache.RedisCache.",
            )
        )
    if settings.SESSION_ENGINE not in ("lifecycle.sessions.backend", "django.contrib.sessions.backends.cache"):
        errors.append(
            Error(
                f"SESSION_ENGINE is {settings.SESSION_ENGINE!r}: sessions would not be shared by instances in Redis.",
                id="sessions.E002",
                hint="Use lifecycle.sessions.backend.",
            )
        )
    return errors


@register(Tags.compatibility)
def check_session_manager_settings(app_configs, **kwargs):
    ttl = sessions_settings.raw("TTL_SECONDS")
    if isinstance(ttl, bool) or not isinstance(ttl, int) or ttl <= 0:
        return [
            Error(f"SESSIONS_TTL_SECONDS must be a positive whole number of seconds, got {ttl!r}.", id="sessions.E003")
        ]
    return []

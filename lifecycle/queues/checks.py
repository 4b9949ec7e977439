"""System checks of the bee queues (ids queues.E001-E002)."""

from django.conf import settings
from django.core.checks import Error, Tags, register

from lifecycle.queues.conf import queues_settings


@register(Tags.caches)
def check_queue_settings(app_configs, **kwargs):
    errors = []
    # A blocking claim longer than the Redis socket timeout would be cut by the client as a
    # Redis failure (503) instead of returning "no messages".
    socket_timeout = settings.CACHES.get("default", {}).get("OPTIONS", {}).get("SOCKET_TIMEOUT")
    max_block_ms = queues_settings.raw("MAX_BLOCK_MS")
    if socket_timeout and max_block_ms >= float(socket_timeout) * 1000:
        errors.append(
            Error(
                f"QUEUES_MAX_BLOCK_MS ({max_block_ms}) must be below the Redis socket timeout "
                f"({float(socket_timeout) * 1000:.0f} ms).",
                id="queues.E001",
                hint="Lower QUEUES_MAX_BLOCK_MS or raise REDIS_SOCKET_TIMEOUT.",
            )
        )
    for name in ("VISIBILITY_TIMEOUT_SECONDS", "RETENTION_SECONDS"):
        if float(queues_settings.raw(name)) <= 0:
            errors.append(Error(f"QUEUES_{name} must be positive.", id="queues.E002"))
    return errors

"""System checks of the hive and its queues, with stable ids."""

from django.conf import settings
from django.core.checks import Error, Tags, register

from hive.conf import hive_settings
from lifecycle.conf import lifecycle_settings


@register(Tags.caches)
def check_hive_settings(app_configs, **kwargs):
    errors = []
    # A blocking claim longer than the Redis socket timeout would be cut by the client as a
    # Redis failure (503) instead of returning "no messages".
    socket_timeout = settings.CACHES.get("default", {}).get("OPTIONS", {}).get("SOCKET_TIMEOUT")
    max_block_ms = lifecycle_settings.QUEUE_MAX_BLOCK_MS
    if socket_timeout and max_block_ms >= float(socket_timeout) * 1000:
        errors.append(
            Error(
                f"LIFECYCLE_QUEUE_MAX_BLOCK_MS ({max_block_ms}) must be below the Redis socket timeout "
                f"({float(socket_timeout) * 1000:.0f} ms).",
                id="hive.E001",
                hint="Lower LIFECYCLE_QUEUE_MAX_BLOCK_MS or raise REDIS_SOCKET_TIMEOUT.",
            )
        )
    for name in ("HOT_HISTORY_TTL_SECONDS", "BOARD_TTL_SECONDS"):
        if float(getattr(hive_settings, name)) <= 0:
            errors.append(Error(f"HIVE_{name} must be positive.", id="hive.E002"))
    for name in ("QUEUE_VISIBILITY_TIMEOUT_SECONDS", "QUEUE_RETENTION_SECONDS", "SESSION_TTL_SECONDS"):
        if float(getattr(lifecycle_settings, name)) <= 0:
            errors.append(Error(f"LIFECYCLE_{name} must be positive.", id="hive.E002"))
    return errors

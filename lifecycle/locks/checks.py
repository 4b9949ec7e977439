"""System checks of the distributed lock (ids locks.E001-E004)."""

from django.conf import settings
from django.core.checks import Error, Tags, register

from lifecycle.locks.conf import locks_settings


@register(Tags.compatibility)
def check_lock_settings(app_configs, **kwargs):
    errors = []

    def number(name: str) -> float | None:
        value = locks_settings.raw(name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value)

    ttl = number("TTL")
    if ttl is None or ttl <= 0:
        errors.append(
            Error(
                f"LOCKS_TTL is {locks_settings.raw('TTL')!r}: a lease needs a positive number of seconds.",
                id="locks.E001",
                hint="30 (seconds) is the default: a dead holder's lock frees itself after it.",
            )
        )
    timeout = number("TIMEOUT")
    if timeout is None or timeout < 0:
        errors.append(
            Error(
                f"LOCKS_TIMEOUT is {locks_settings.raw('TIMEOUT')!r}: it must be 0 or more seconds.",
                id="locks.E002",
            )
        )
    fair_after = number("FAIR_AFTER")
    if fair_after is None or fair_after < 0:
        errors.append(
            Error(
                f"LOCKS_FAIR_AFTER is {locks_settings.raw('FAIR_AFTER')!r}: it must be 0 or more seconds.",
                id="locks.E003",
                hint="0 (the default) hands the lock to the oldest waiter at every release.",
            )
        )
    max_block = number("MAX_BLOCK")
    socket_timeout = settings.CACHES.get("default", {}).get("OPTIONS", {}).get("SOCKET_TIMEOUT")
    if max_block is None or max_block <= 0 or (socket_timeout and max_block >= float(socket_timeout)):
        errors.append(
            Error(
                f"LOCKS_MAX_BLOCK is {locks_settings.raw('MAX_BLOCK')!r}: a waiter's BLPOP must last "
                f"more than 0 s and less than the Redis socket timeout ({socket_timeout} s), or the blocked read "
                "itself times out.",
                id="locks.E004",
                hint="Keep it at 1.0 (the default) or below REDIS_SOCKET_TIMEOUT.",
            )
        )
    return errors

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


@register(Tags.compatibility)
def check_lifecycle_timings(app_configs, **kwargs):
    """Issue 7: registry, recovery and shutdown settings that would defeat their purpose."""
    from lifecycle.conf import lifecycle_settings

    errors = []
    interval, ttl = lifecycle_settings.HEARTBEAT_INTERVAL, lifecycle_settings.HEARTBEAT_TTL
    if ttl < 2 * interval:
        errors.append(
            Error(
                f"The instance heartbeat TTL ({ttl:g} s) is under twice its interval ({interval:g} s): "
                "a live instance would be marked lost after one late beat.",
                id="lifecycle.E030",
                hint="Set INSTANCE_HEARTBEAT_TTL to at least twice INSTANCE_HEARTBEAT_INTERVAL.",
            )
        )
    job_heartbeat = (getattr(settings, "PROCRASTINATE_WORKER_DEFAULTS", None) or {}).get(
        "update_heartbeat_interval", 10.0
    )
    if 2 * job_heartbeat > lifecycle_settings.STALLED_JOB_SECONDS:
        errors.append(
            Error(
                f"STALLED_JOB_SECONDS ({lifecycle_settings.STALLED_JOB_SECONDS:g}) is under twice the job "
                f"workers' heartbeat interval ({job_heartbeat:g} s): running jobs would be retried while "
                "their worker is alive.",
                id="lifecycle.E031",
                hint="Raise STALLED_JOB_SECONDS or lower PROCRASTINATE_WORKER_DEFAULTS['update_heartbeat_interval'].",
            )
        )
    try:
        deadline = detect_platform().shutdown_deadline
    except ValueError:
        return errors  # lifecycle.E001 says why
    delay = lifecycle_settings.DRAIN_DELAY
    if delay is not None and delay >= deadline:
        errors.append(
            Error(
                f"The drain delay ({delay:g} s) does not fit in the shutdown deadline ({deadline:g} s): "
                "in-flight requests would have no time left.",
                id="lifecycle.E032",
                hint="Lower DRAIN_DELAY (0 on Cloud Run) or raise the grace period.",
            )
        )
    return errors


@register(Tags.compatibility)
def check_lifecycle_steps(app_configs, **kwargs):
    from django.utils.module_loading import import_string

    from lifecycle.conf import lifecycle_settings
    from lifecycle.steps import Step

    errors = []
    for setting in ("SHUTDOWN_STEPS", "RECOVERY_STEPS"):
        for path in getattr(lifecycle_settings, setting):
            try:
                step = import_string(path)
            except ImportError as exc:
                errors.append(Error(f"LIFECYCLE_{setting}: {path!r} cannot be imported ({exc}).", id="lifecycle.E033"))
                continue
            if not (isinstance(step, type) and issubclass(step, Step)):
                errors.append(
                    Error(
                        f"LIFECYCLE_{setting}: {path!r} is not a lifecycle.steps.Step subclass.",
                        id="lifecycle.E034",
                    )
                )
    return errors


# --- distributed lock (lifecycle.locks, issue 4): ids lifecycle.E010-E019 ---
@register(Tags.compatibility)
def check_lock_settings(app_configs, **kwargs):
    from lifecycle.conf import lifecycle_settings

    errors = []

    def number(name: str) -> float | None:
        value = getattr(lifecycle_settings, name)
        if isinstance(value, bool) or not isinstance(value, int | float):
            return None
        return float(value)

    ttl = number("LOCK_TTL")
    if ttl is None or ttl <= 0:
        errors.append(
            Error(
                f"LIFECYCLE_LOCK_TTL is {lifecycle_settings.LOCK_TTL!r}: a lease needs a positive number of seconds.",
                id="lifecycle.E010",
                hint="30 (seconds) is the default: a dead holder's lock frees itself after it.",
            )
        )
    timeout = number("LOCK_TIMEOUT")
    if timeout is None or timeout < 0:
        errors.append(
            Error(
                f"LIFECYCLE_LOCK_TIMEOUT is {lifecycle_settings.LOCK_TIMEOUT!r}: it must be 0 or more seconds.",
                id="lifecycle.E011",
            )
        )
    fair_after = number("LOCK_FAIR_AFTER")
    if fair_after is None or fair_after < 0:
        errors.append(
            Error(
                f"LIFECYCLE_LOCK_FAIR_AFTER is {lifecycle_settings.LOCK_FAIR_AFTER!r}: it must be 0 or more seconds.",
                id="lifecycle.E013",
                hint="0 (the default) hands the lock to the oldest waiter at every release.",
            )
        )
    max_block = number("LOCK_MAX_BLOCK")
    socket_timeout = settings.CACHES.get("default", {}).get("OPTIONS", {}).get("SOCKET_TIMEOUT")
    if max_block is None or max_block <= 0 or (socket_timeout and max_block >= float(socket_timeout)):
        errors.append(
            Error(
                f"LIFECYCLE_LOCK_MAX_BLOCK is {lifecycle_settings.LOCK_MAX_BLOCK!r}: a waiter's BLPOP must last "
                f"more than 0 s and less than the Redis socket timeout ({socket_timeout} s), or the blocked read "
                "itself times out.",
                id="lifecycle.E012",
                hint="Keep it at 1.0 (the default) or below REDIS_SOCKET_TIMEOUT.",
            )
        )
    return errors

"""System checks of the instance lifecycle (ids lifecycle.E001-E009): bad configuration is caught at start."""

from typing import Any

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


@register(Tags.compatibility)
def check_lifecycle_timings(app_configs, **kwargs):
    """Registry, recovery and shutdown settings that would defeat their purpose."""
    from lifecycle.conf import lifecycle_settings

    errors = []
    interval, ttl = lifecycle_settings.HEARTBEAT_INTERVAL, lifecycle_settings.HEARTBEAT_TTL
    if ttl < 2 * interval:
        errors.append(
            Error(
                f"The instance heartbeat TTL ({ttl:g} s) is under twice its interval ({interval:g} s): "
                "a live instance would be marked lost after one late beat.",
                id="lifecycle.E002",
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
                id="lifecycle.E003",
                hint="Raise STALLED_JOB_SECONDS or lower PROCRASTINATE_WORKER_DEFAULTS['update_heartbeat_interval'].",
            )
        )
    hung = lifecycle_settings.WORKER_HUNG_SECONDS
    longest_beat = redis_longest_call()
    if hung <= interval + longest_beat:
        errors.append(
            Error(
                f"WORKER_HUNG_SECONDS ({hung:g}) is not over the heartbeat interval ({interval:g} s) plus the "
                f"longest heartbeat write while Redis is unreachable ({longest_beat:g} s): a Redis outage "
                "would restart every worker.",
                id="lifecycle.E007",
                hint="Raise WORKER_HUNG_SECONDS, or lower INSTANCE_HEARTBEAT_INTERVAL or REDIS_SOCKET_TIMEOUT.",
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
                id="lifecycle.E004",
                hint="Lower DRAIN_DELAY (0 on Cloud Run) or raise the grace period.",
            )
        )
    return errors


def redis_longest_call() -> float:
    """Seconds one Redis command can take before it fails: every try times out, with the backoff between."""
    cache: dict[str, Any] = settings.CACHES["default"]
    options = cache.get("OPTIONS", {})
    timeout = max(options.get("SOCKET_CONNECT_TIMEOUT") or 0, options.get("SOCKET_TIMEOUT") or 0)
    retry = options.get("CONNECTION_POOL_KWARGS", {}).get("retry")
    if retry is None:
        return float(timeout)
    retries = retry.get_retries()
    return (retries + 1) * timeout + sum(retry._backoff.compute(n) for n in range(1, retries + 1))


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
                errors.append(Error(f"LIFECYCLE_{setting}: {path!r} cannot be imported ({exc}).", id="lifecycle.E005"))
                continue
            if not (isinstance(step, type) and issubclass(step, Step)):
                errors.append(
                    Error(
                        f"LIFECYCLE_{setting}: {path!r} is not a lifecycle.steps.Step subclass.",
                        id="lifecycle.E006",
                    )
                )
    return errors


@register(Tags.security)
def check_wake(app_configs, **kwargs):
    """A worker that scales to zero: its wake-up endpoint must never be open, nor the wake-ups of
    the web unauthenticated (the worker would refuse them all, and only the schedule would run)."""
    from lifecycle.conf import lifecycle_settings

    errors = []
    token = lifecycle_settings.WAKE_TOKEN
    if (lifecycle_settings.WAKE_SERVE or lifecycle_settings.WAKE_URL) and not token:
        errors.append(
            Error(
                "WAKE_SERVE or WAKE_URL is set without WAKE_TOKEN: the worker's /internal/wake refuses every "
                "wake-up without the shared token.",
                id="lifecycle.E008",
                hint="Set WAKE_TOKEN (a secret, the same on the web and the worker service).",
            )
        )
    if lifecycle_settings.DRAIN_MAX_SECONDS <= 0:
        errors.append(
            Error(
                f"DRAIN_MAX_SECONDS ({lifecycle_settings.DRAIN_MAX_SECONDS:g}) must be positive: a drain would "
                "stop before its first round.",
                id="lifecycle.E009",
            )
        )
    return errors

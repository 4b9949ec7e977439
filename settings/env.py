"""Reading configuration from the environment (12-factor): the only place settings look."""

import os
from typing import Any

from django.core.exceptions import ImproperlyConfigured


def env_str(name: str, default: str | None = None) -> str:
    value = os.environ.get(name)
    if value is None or value == "":
        if default is None:
            raise ImproperlyConfigured(f"The environment variable {name} is required and is not set.")
        return default
    return value


def env_int(name: str, default: int) -> int:
    raw = os.environ.get(name)
    if not raw:  # unset or empty
        return default
    try:
        return int(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a whole number, got {raw!r}.") from None


def env_float(name: str, default: float) -> float:
    raw = os.environ.get(name)
    if not raw:  # unset or empty
        return default
    try:
        return float(raw)
    except ValueError:
        raise ImproperlyConfigured(f"{name} must be a number, got {raw!r}.") from None


def env_bool(name: str, default: bool) -> bool:
    raw = os.environ.get(name)
    if not raw:  # unset or empty
        return default
    if raw.lower() in ("1", "true", "yes", "on"):
        return True
    if raw.lower() in ("0", "false", "no", "off"):
        return False
    raise ImproperlyConfigured(f"{name} must be true or false, got {raw!r}.")


def env_list(name: str, default: list[str]) -> list[str]:
    raw = os.environ.get(name)
    if not raw:  # unset or empty
        return default
    return [item.strip() for item in raw.split(",") if item.strip()]


def sentinel_address(item: str) -> tuple[str, int]:
    """'host:port' of a Redis Sentinel (REDIS_SENTINELS) -> (host, port)."""
    host, _, port = item.rpartition(":")
    if not host or not port.isdigit():
        raise ImproperlyConfigured(f"REDIS_SENTINELS: {item!r} is not host:port.")
    return host, int(port)


def env_settings(names: dict[str, tuple[str, Any]]) -> dict[str, Any]:
    """{SETTING: (ENV_VAR, reader)} -> the settings whose environment variable is set, read.

    A setting whose variable is unset is left out, so the app's own default (its conf.py) applies:
    defaults are written once, where the setting is declared.
    """
    return {
        setting: reader(variable, None) for setting, (variable, reader) in names.items() if os.environ.get(variable)
    }

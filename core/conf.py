"""The one settings helper every app's `conf.py` uses, and the settings `core` itself reads.

An app declares its settings once, as annotated class attributes whose values are the defaults::

    class LocksSettings(AppSettings):
        prefix = "LOCKS_"
        # Lease length in seconds when the caller gives none.
        TTL: float = 30.0

    locks_settings = LocksSettings()

`locks_settings.TTL` is then `settings.LOCKS_TTL` if the project sets it, else 30.0, and typed:
mypy sees a float, and a configured value of another type is an ImproperlyConfigured naming the
setting (an int where a float is declared is taken as that float). The checked value is kept
until Django's `setting_changed` signal (sent by `override_settings` and pytest-django's
`settings` fixture) drops every kept value: middleware reads settings on every request, and
reading and checking one anew cost more than the rest of some middleware's work. The defaults live here and
nowhere else: `settings/` sets only what an environment changes.
"""

from __future__ import annotations

import types
from typing import Any, ClassVar, Union, get_args, get_origin, get_type_hints

from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.core.signals import setting_changed


class AppSettings:
    prefix: ClassVar[str] = ""

    def __getattribute__(self, name: str) -> Any:
        if not name.isupper():
            return super().__getattribute__(name)
        cls = type(self)
        kept = _kept.get((cls, name), _MISSING)
        if kept is not _MISSING:
            return kept
        declared = _declared(cls)
        if name not in declared:
            raise AttributeError(f"{cls.__name__} has no setting {name}.")
        value = _conform(cls.prefix + name, cls.raw(name), declared[name])
        _kept[(cls, name)] = value
        return value

    @classmethod
    def raw(cls, name: str) -> Any:
        """The configured value of `name` as the project gave it (or the default), unchecked."""
        return getattr(settings, cls.prefix + name, getattr(cls, name))

    @classmethod
    def names(cls) -> list[str]:
        return list(_declared(cls))


# Read once per class. (Not functools.cache: mypy refuses a class as its Hashable argument when
# the call is made inside that class's own methods.)
_declared_settings: dict[type[AppSettings], dict[str, Any]] = {}


# Checked values by (class, name), until a setting changes (a wrong type is never kept: it raises
# again at the next access).
_kept: dict[tuple[type[AppSettings], str], Any] = {}
_MISSING = object()


def _settings_changed(**kwargs: Any) -> None:
    # Any setting: a prefix need not be unique, and changes happen only in tests. Connected when
    # core.conf is first imported, so before any receiver of a module that reads AppSettings:
    # those then read the new value.
    _kept.clear()


setting_changed.connect(_settings_changed, dispatch_uid="core.conf.kept_settings")


def _declared(cls: type[AppSettings]) -> dict[str, Any]:
    declared = _declared_settings.get(cls)
    if declared is None:
        declared = {name: hint for name, hint in get_type_hints(cls).items() if name.isupper()}
        _declared_settings[cls] = declared
    return declared


def _conform(setting: str, value: Any, hint: Any) -> Any:
    if hint is Any:
        return value
    origin = get_origin(hint)
    if origin in (Union, types.UnionType):
        options = get_args(hint)
        if value is None and type(None) in options:
            return None
        for option in options:
            if option is not type(None):
                try:
                    return _conform(setting, value, option)
                except ImproperlyConfigured:
                    continue
        raise _wrong_type(setting, value, hint)
    expected = origin or hint
    # bool is an int to isinstance, never to a reader of `LOCKS_TTL = True`.
    if isinstance(value, bool) and expected is not bool:
        raise _wrong_type(setting, value, hint)
    if expected is float and isinstance(value, int):
        return float(value)
    if not isinstance(value, expected):
        raise _wrong_type(setting, value, hint)
    return value


def _wrong_type(setting: str, value: Any, hint: Any) -> ImproperlyConfigured:
    name = getattr(hint, "__name__", str(hint))
    return ImproperlyConfigured(f"settings.{setting} must be of type {name}, got {value!r}.")


class CoreSettings(AppSettings):
    prefix = "OMK_"
    # URL prefix of the JSON API: errors under it are JSON even when Django itself answers.
    API_PREFIX: str = "/api/"
    # Largest request body accepted under the API prefix (bytes); larger ones get 413 unparsed.
    API_MAX_BODY_BYTES: int = 64 * 1024
    # Seconds a client is told to wait (Retry-After) when PostgreSQL or Redis is unreachable.
    RETRY_AFTER_SECONDS: int = 5
    # Proxies in front of the service that append to X-Forwarded-For (core/clients.py): the
    # client's address is this many entries from its right. 0: REMOTE_ADDR.
    TRUSTED_PROXY_HOPS: int = 0
    # API throttles (core/throttling.py), in django-ninja's rate syntax: per user and endpoint
    # class (reads, writes), and per address for requests with no user (the login).
    API_THROTTLE_USER: str = "50/s"
    API_THROTTLE_ANON: str = "10/s"
    # The API's interactive docs (/api/docs) for everyone; False: staff only (production).
    API_DOCS_PUBLIC: bool = True
    # Prefix of the throttles' Redis counters.
    THROTTLE_KEY_PREFIX: str = "omk:throttle:"
    # Redis replicas that must have a write whose loss would lose acknowledged data (board
    # posts, queue publish and ack, session writes) before it is acknowledged: the write is
    # followed by WAIT on the same connection, and fewer replicas in time is a 503. 0: no WAIT.
    REDIS_MIN_REPLICAS_ACK: int = 0
    # Seconds the WAIT above may take (keep it below REDIS_SOCKET_TIMEOUT).
    REDIS_REPLICAS_ACK_TIMEOUT: float = 0.5
    # Directory of this host's instance files: pidfiles, drain flags, shutdown reports and
    # gunicorn's multiprocess metrics. The only place the path is written.
    RUN_DIR: str = "/tmp/omk"


core_settings = CoreSettings()

"""DATABASE_URL -> Django's DATABASES entry, libpq's multi-host form included.

`postgres://user@host1:5432,host2:5432/omk?target_session_attrs=read-write` names every server
that may be the primary (a self-run primary and its standby, say); libpq tries them in order and
keeps the first that accepts writes, so after a failover a new connection finds the promoted
standby without a change of configuration. dj-database-url parses one host only, so the host
list is split here and handed to psycopg 3 as libpq expects it: HOST and PORT comma-separated,
one port per host; the query's options (target_session_attrs, sslmode...) go to OPTIONS.
"""

from typing import Any
from urllib.parse import urlsplit, urlunsplit

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

DEFAULT_PORT = "5432"
# With several hosts and no such option, libpq keeps the first server that answers, which may
# be a standby: every write would then fail until the connection is recycled.
WRITABLE_SESSION_ATTRS = frozenset({"read-write", "primary"})


def database_config(url: str, **parse_options: Any) -> dict[str, Any]:
    """The DATABASES entry for `url` (`parse_options` as dj_database_url.parse takes them)."""
    parts = urlsplit(url)
    credentials, at, hostlist = parts.netloc.rpartition("@")
    if "," not in hostlist:
        return _parse(url, **parse_options)
    addresses = [_address(item, url) for item in hostlist.split(",")]
    # dj-database-url reads everything but the host list from the URL with one placeholder host.
    single = urlunsplit(parts._replace(netloc=f"{credentials}{at}placeholder"))
    config = _parse(single, **parse_options)
    attrs = config.get("OPTIONS", {}).get("target_session_attrs")
    if attrs not in WRITABLE_SESSION_ATTRS:
        raise ImproperlyConfigured(
            "DATABASE_URL lists several hosts: add ?target_session_attrs=read-write so that only the "
            f"primary is used (got target_session_attrs={attrs!r})."
        )
    config["HOST"] = ",".join(host for host, _ in addresses)
    ports = [port for _, port in addresses]
    # No port at all: libpq's default for every host; otherwise one per host, as libpq wants.
    config["PORT"] = ",".join(port or DEFAULT_PORT for port in ports) if any(ports) else ""
    return config


def _parse(url: str, **parse_options: Any) -> dict[str, Any]:
    # A plain dict: Django's settings take more keys than dj-database-url's TypedDict names.
    return dict(dj_database_url.parse(url, **parse_options))


def _address(item: str, url: str) -> tuple[str, str]:
    """'host', 'host:port', '[v6]' or '[v6]:port' -> (host, port or '')."""
    if item.startswith("["):
        host, _, rest = item[1:].partition("]")
        port = rest.removeprefix(":")
    else:
        host, _, port = item.partition(":")
    if not host or (port and not port.isdigit()):
        raise ImproperlyConfigured(f"DATABASE_URL: {item!r} is not host or host:port (in {_redacted(url)}).")
    return host, port


def _redacted(url: str) -> str:
    parts = urlsplit(url)
    credentials, at, hostlist = parts.netloc.rpartition("@")
    user = credentials.partition(":")[0]
    return urlunsplit(parts._replace(netloc=f"{user}{at}{hostlist}", query=""))

"""DATABASE_URL in libpq's multi-host form: parsed for psycopg 3, and followed through a failover
by every PostgreSQL client of the service (Django's pooled connections, procrastinate's worker
connector, the database bootstrap script) without a restart."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from django.conf import settings
from django.core.exceptions import ImproperlyConfigured
from django.db.backends.postgresql.base import DatabaseWrapper
from procrastinate.psycopg_connector import PsycopgConnector

from chaos.topology import PostgresPair
from settings.database import database_config

ROOT = Path(__file__).resolve().parents[2]
DATABASE = "omk_multihost"


def test_database_config__multi_host_url_gives_libpq_host_and_port_lists():
    config = database_config(
        "postgres://omk:s%40cret@10.0.0.1:5433,10.0.0.2:5434,[::1]:5435/omk"
        "?target_session_attrs=read-write&sslmode=require"
    )
    assert config["HOST"] == "10.0.0.1,10.0.0.2,::1"
    assert config["PORT"] == "5433,5434,5435"
    assert (config["NAME"], config["USER"], config["PASSWORD"]) == ("omk", "omk", "s@cret")
    assert config["OPTIONS"] == {"target_session_attrs": "read-write", "sslmode": "require"}
    assert config["ENGINE"] == "django.db.backends.postgresql"


def test_database_config__missing_ports_are_the_default_one():
    assert database_config("postgres://h1,h2:6000/omk?target_session_attrs=primary")["PORT"] == "5432,6000"
    assert database_config("postgres://h1,h2/omk?target_session_attrs=primary")["PORT"] == ""


def test_database_config__single_host_is_dj_database_url_as_before():
    config = database_config("postgres://postgres@127.0.0.1:5432/omk", conn_max_age=0)
    assert (config["HOST"], config["PORT"], config["NAME"], config["CONN_MAX_AGE"]) == ("127.0.0.1", 5432, "omk", 0)


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("postgres://h1:5432,h2:5432/omk", "target_session_attrs=read-write"),
        ("postgres://h1:5432,h2:5432/omk?target_session_attrs=any", "target_session_attrs=read-write"),
        ("postgres://u:pw@h1:5432,h2:x/omk?target_session_attrs=read-write", "'h2:x' is not host or host:port"),
        ("postgres://u:pw@h1:5432,/omk?target_session_attrs=read-write", "'' is not host or host:port"),
    ],
)
def test_database_config__bad_multi_host_url_is_refused_clearly(url, message):
    with pytest.raises(ImproperlyConfigured, match=message) as raised:
        database_config(url)
    assert "pw" not in str(raised.value)  # never the password in an error


def test_settings__url_options_reach_the_connection_options():
    """The URL's own options are kept next to the service's (pool, timeouts)."""
    code = (
        "from django.conf import settings; o = settings.DATABASES['default']; "
        "print(o['HOST'], o['PORT'], sorted(o['OPTIONS']))"
    )
    env = {
        **os.environ,
        "DJANGO_SETTINGS_MODULE": "settings.base",
        "DATABASE_URL": "postgres://h1:1,h2:2/omk?target_session_attrs=read-write",
    }
    out = subprocess.run(
        [sys.executable, "-c", f"import django; django.setup(); {code}"],
        cwd=ROOT, env=env, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    assert out.split(" ", 2)[:2] == ["h1,h2", "1,2"]
    for option in ("target_session_attrs", "pool", "connect_timeout"):
        assert f"'{option}'" in out


# --- A real primary and standby ------------------------------------------------------------------


@pytest.fixture(scope="module")
def pair(tmp_path_factory) -> Iterator[PostgresPair]:
    pair = PostgresPair(tmp_path_factory.mktemp("multihost"))
    try:
        pair.start()
        pair.create_database(DATABASE)
        with psycopg.connect(pair.primary.url(DATABASE), autocommit=True) as conn:
            conn.execute("CREATE TABLE written (n int, via text)")
        yield pair
    finally:
        pair.remove()


def _standby_first_url(pair: PostgresPair) -> str:
    return (
        f"postgres://postgres@127.0.0.1:{pair.standby.port},127.0.0.1:{pair.primary.port}/{DATABASE}"
        "?target_session_attrs=read-write"
    )


def _django_pooled(url: str) -> DatabaseWrapper:
    """A Django connection with the service's own OPTIONS (pool, health checks) for `url`."""
    service = settings.DATABASES["default"]
    config = {**service, **database_config(url, conn_max_age=0)}
    config["OPTIONS"] = {
        **database_config(url).get("OPTIONS", {}),
        **{k: v for k, v in service["OPTIONS"].items() if k != "pool"},
        "pool": {**service["OPTIONS"]["pool"], "min_size": 1, "max_size": 2},
    }
    config["CONN_HEALTH_CHECKS"] = True
    config["TEST"] = {}
    return DatabaseWrapper(config, alias="multihost")


def _write(conn: DatabaseWrapper, n: int) -> int:
    """One insert in a transaction, as a request does; the server port that took it."""
    conn.ensure_connection()
    with conn.cursor() as cursor:
        cursor.execute("INSERT INTO written VALUES (%s, 'django')", [n])
        cursor.execute("SELECT inet_server_port()")
        port = cursor.fetchone()[0]
    conn.close()  # back to the pool, as at the end of a request
    return port


def _procrastinate_port(params: dict[str, Any]) -> int:
    async def query() -> int:
        connector = PsycopgConnector(kwargs=params)
        await connector.open_async()
        try:
            await connector.execute_query_async("INSERT INTO written VALUES (0, 'procrastinate')")
            row = await connector.execute_query_one_async("SELECT inet_server_port() AS port")
            return row["port"]
        finally:
            await connector.close_async()

    return asyncio.run(query())


def _connector_params(conn: DatabaseWrapper) -> dict[str, Any]:
    # What procrastinate.contrib.django.utils.connector_params builds for the worker connector.
    params = conn.get_connection_params()
    params.pop("cursor_factory", None)
    params.pop("context", None)
    return params


@pytest.mark.slow
def test_multi_host_url__writes_go_to_the_primary_and_follow_a_failover(pair, django_db_blocker):
    conn = _django_pooled(_standby_first_url(pair))
    first_primary = pair.primary.port
    # A server of the test's own, not the test database: pytest-django's guard does not apply.
    with django_db_blocker.unblock():
        try:
            # The standby is listed first and answers: libpq skips it (read-only) for the primary.
            assert _write(conn, 1) == first_primary
            assert _procrastinate_port(_connector_params(conn)) == first_primary

            # The primary's stop breaks the pooled connection; the pool's check drops it and the
            # next connection, same settings, same process, finds the promoted standby.
            pair.fail_over()
            assert pair.primary.port != first_primary
            assert _write(conn, 2) == pair.primary.port
            assert _procrastinate_port(_connector_params(conn)) == pair.primary.port

            # And back: the rebuilt old primary (pg_rewind) was a synchronous standby, is promoted
            # in turn, and the node now listed first is the standby that is skipped.
            assert pair.sync_state(pair.primary) == "sync"
            pair.fail_over(rebuild=False)
            assert pair.primary.port == first_primary
            assert _write(conn, 3) == first_primary
        finally:
            conn.close_pool()
    # Nothing committed before the failover was lost (synchronous replication).
    with psycopg.connect(pair.primary.url(DATABASE)) as check:
        assert check.execute("SELECT n FROM written WHERE via = 'django' ORDER BY n").fetchall() == [(1,), (2,), (3,)]


@pytest.mark.slow
def test_ensure_database__creates_the_database_on_the_primary(pair):
    env = {**os.environ, "DATABASE_URL": _standby_first_url(pair).replace(DATABASE, "omk_created")}
    subprocess.run([sys.executable, "scripts/ensure_database.py"], cwd=ROOT, env=env, check=True, capture_output=True)
    with psycopg.connect(pair.primary.url("postgres")) as conn:
        assert conn.execute("SELECT 1 FROM pg_database WHERE datname = 'omk_created'").fetchone()

"""What a PostgreSQL failover answers, from real servers, is "dependency unavailable": 503 with
Retry-After, readiness naming it, nothing half-written.

The module starts a PostgreSQL cluster of its own with this run's schema, and two streaming
standbys of it made by pg_basebackup: one hot (answers reads, refuses writes with
read_only_sql_transaction, as a Cloud SQL replica or a not-yet-promoted standby does), one with
hot_standby off (refuses connections with cannot_connect_now, as a server starting up does).
admin_shutdown and a connection lost mid-transaction come from pg_terminate_backend.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
import pytest
import requests
from django.db import connection
from django.db.backends.postgresql.base import DatabaseWrapper

from chaos.topology import PostgresCluster, wait_until
from core.dependencies import unavailable_dependency
from tests.support.dependencies import raised

# Every test: the module's clusters copy this run's test database, which pytest-django creates
# only for a run that has a django_db test.
pytestmark = pytest.mark.django_db

DATABASE = "omk"


@dataclass
class Clusters:
    primary: PostgresCluster
    standby: PostgresCluster
    cold: PostgresCluster


def _test_database_url() -> str:
    db = connection.settings_dict
    server = f"{db['USER'] or 'postgres'}@{db['HOST'] or '127.0.0.1'}:{db['PORT'] or 5432}"
    return f"postgresql://{server}/{db['TEST']['NAME']}"


def _copy(primary: PostgresCluster, *pg_dump_args: str) -> None:
    dump = subprocess.run(
        ["pg_dump", "--no-owner", *pg_dump_args, _test_database_url()], capture_output=True, check=True
    ).stdout
    subprocess.run(
        ["psql", "-q", "-v", "ON_ERROR_STOP=1", primary.url(DATABASE)], input=dump, capture_output=True, check=True
    )


@pytest.fixture(scope="module")
def clusters(django_db_setup, tmp_path_factory) -> Iterator[Clusters]:
    root = tmp_path_factory.mktemp("postgres-failover")
    primary = PostgresCluster(root / "primary")
    standby = PostgresCluster(root / "standby")
    cold = PostgresCluster(root / "cold")
    primary.init()
    primary.start()
    started = [primary]
    try:
        primary.create_database(DATABASE)
        _copy(primary, "--schema-only")
        for cluster, settings in ((standby, {}), (cold, {"hot_standby": "off"})):
            cluster.init_standby(primary)
            cluster.start(**settings)
            started.append(cluster)
        yield Clusters(primary, standby, cold)
    finally:
        for cluster in started:
            cluster.remove()


def _terminate(pid: int, url: str) -> None:
    """pg_terminate_backend, and wait until the backend is gone (it only signals it)."""
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", [pid])
        assert wait_until(
            lambda: admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone()[0] == 0, 10
        )


def _django_connection(cluster: PostgresCluster) -> DatabaseWrapper:
    """A Django connection of its own to `cluster`: Django's error wrapping, not the pool's."""
    settings = {**connection.settings_dict, "HOST": "127.0.0.1", "PORT": cluster.port, "NAME": DATABASE}
    settings["OPTIONS"] = {"connect_timeout": 3}
    return DatabaseWrapper(settings, alias="failover-test")


def _insert_group(conn) -> None:
    with conn.cursor() as cursor:
        cursor.execute("INSERT INTO auth_group (name) VALUES ('g')")


def test_unavailable_dependency__real_postgresql_errors_are_database(clusters):
    errors: dict[str, BaseException] = {}
    with psycopg.connect(clusters.standby.url(DATABASE)) as standby:
        errors["read_only_sql_transaction"] = raised(lambda: _insert_group(standby))
    errors["cannot_connect_now"] = raised(lambda: psycopg.connect(clusters.cold.url(DATABASE), connect_timeout=3))
    with psycopg.connect(clusters.primary.url(DATABASE)) as victim:
        _insert_group(victim)  # a transaction in progress
        _terminate(victim.info.backend_pid, clusters.primary.url("postgres"))
        errors["connection lost mid-transaction"] = raised(lambda: _insert_group(victim))
    assert errors["read_only_sql_transaction"].sqlstate == "25006"
    # libpq reports a refused connection without a SQLSTATE: the server's message says it.
    assert "not accepting connections" in str(errors["cannot_connect_now"])
    # The server says why as it goes (57P01, admin_shutdown), unless the socket closed first.
    assert errors["connection lost mid-transaction"].sqlstate in ("57P01", None)
    assert {name: unavailable_dependency(exc) for name, exc in errors.items()} == dict.fromkeys(errors, "database")


def test_unavailable_dependency__django_wrapped_standby_and_starting_errors_are_database(clusters):
    standby = _django_connection(clusters.standby)
    try:
        read_only = raised(lambda: _insert_group(standby))
    finally:
        standby.close()
    cold = _django_connection(clusters.cold)
    cannot_connect = raised(cold.ensure_connection)
    # Django wraps read_only_sql_transaction as an InternalError, not an OperationalError.
    assert type(read_only).__name__ == "InternalError"
    assert unavailable_dependency(read_only) == "database"
    assert unavailable_dependency(cannot_connect) == "database"


def test_unavailable_dependency__a_constraint_violation_is_not_an_outage(clusters):
    primary = _django_connection(clusters.primary)
    try:
        with primary.cursor() as cursor:
            cursor.execute("INSERT INTO auth_group (name) VALUES ('unique-name')")
        duplicate = raised(lambda: primary.cursor().execute("INSERT INTO auth_group (name) VALUES ('unique-name')"))
    finally:
        primary.close()
    assert unavailable_dependency(duplicate) is None


@pytest.mark.django_db(transaction=True)
def test_turn_append__connection_lost_mid_transaction_is_503_and_nothing_is_written(api_client, user, monkeypatch):
    from hive import services
    from hive.models import Conversation, Turn
    from lifecycle.idempotency.models import IdempotencyRecord
    from lifecycle.outbox.models import OutboxEvent

    conversation = services.conversation_create(owner=user)
    real_record_event = services.record_event

    def cut_then_record(**kwargs):
        # The conversation's counter and the turn are written; the connection dies before the
        # outbox row, as when the server is stopped or fails over under a transaction.
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_backend_pid()")
            _terminate(cursor.fetchone()[0], _test_database_url().rsplit("/", 1)[0] + "/postgres")
        return real_record_event(**kwargs)

    monkeypatch.setattr(services, "record_event", cut_then_record)
    response = api_client.post(
        f"/api/conversations/{conversation.id}/turns/",
        {"role": "user", "content": "lost with its transaction"},
        content_type="application/json",
        headers={"Idempotency-Key": "cut-mid-transaction"},
    )
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    assert response.json()["dependency"] == "database"
    assert Conversation.objects.get(pk=conversation.pk).last_seq == 0
    assert not Turn.objects.exists()
    assert not OutboxEvent.objects.filter(kind="llm_conversation").exists()
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_instance__on_a_standby_writes_are_503_and_readiness_names_it(clusters, start_instance, api_token):
    _copy(clusters.primary, "--data-only", "--table=auth_user", "--table=accounts_apitoken")
    with psycopg.connect(clusters.standby.url(DATABASE)) as standby:
        replayed = lambda: standby.execute("SELECT count(*) FROM accounts_apitoken").fetchone()[0] == 1  # noqa: E731
        assert wait_until(replayed, 10)
    instance = start_instance(DATABASE_URL=clusters.standby.url(DATABASE))
    headers = {"Authorization": f"Bearer {api_token}"}

    # Reads are served by the standby; the first write is refused, cleanly.
    assert requests.get(instance.url + "/api/proposals/", headers=headers, timeout=10).status_code == 200
    response = requests.post(instance.url + "/api/conversations/", json={"title": "t"}, headers=headers, timeout=10)
    assert response.status_code == 503
    assert response.headers["Retry-After"] == "5"
    assert response.json()["dependency"] == "database"
    assert "Traceback" not in response.text

    deadline = time.monotonic() + 10
    while True:
        ready = requests.get(instance.url + "/ready", timeout=10)
        if "read-only" in ready.json()["checks"]["database"] or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert ready.status_code == 503
    assert "read-only" in ready.json()["checks"]["database"]
    assert ready.json()["checks"]["redis"] == "ok"

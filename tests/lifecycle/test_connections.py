"""PostgreSQL through Django's psycopg pool and Redis through django-redis: broken connections
are detected and replaced, against the real servers."""

import os
import time
from pathlib import Path

import psycopg
import pytest
import requests
from django.conf import settings
from django.db import connection, connections
from redis.utils import HIREDIS_AVAILABLE

from core.postgresql.base import DatabaseWrapper
from core.redis import redis_client
from tests.support.postgres import admin_connect, backends_terminate


def test_redis__uses_hiredis_keepalive_and_health_checks():
    assert HIREDIS_AVAILABLE
    kwargs = redis_client().connection_pool.connection_kwargs
    assert kwargs["socket_keepalive"] is True
    assert kwargs["health_check_interval"] > 0
    assert kwargs["retry"]._retries >= 1


def test_redis__killed_connection_is_replaced_transparently():
    client = redis_client()
    client.set("probe", "1")
    own_id = client.client_id()
    # Cut every client connection of ours from the server side, as a Redis restart would.
    killer = client.connection_pool.make_connection()
    killer.send_command("CLIENT", "KILL", "ID", own_id)
    killer.read_response()
    killer.disconnect()
    assert client.get("probe") == b"1"
    assert client.client_id() != own_id


@pytest.mark.django_db
def test_database__pool_is_configured_with_health_checks():
    assert settings.DATABASES["default"]["OPTIONS"]["pool"]
    assert settings.DATABASES["default"]["ENGINE"] == "core.postgresql"
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    assert connection.pool is not None
    assert isinstance(connections["default"], DatabaseWrapper)


def _terminate_backends(dbname: str) -> int:
    """Terminate every other process's connections to `dbname`, as a server restart would."""
    others = "FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid() AND application_name <> %s"
    with admin_connect() as admin:
        pids = [row[0] for row in admin.execute(f"SELECT pid {others}", [dbname, f"omk-{os.getpid()}"])]
        backends_terminate(admin, pids)
    return len(pids)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_instance__database_connections_killed_are_replaced(start_instance):
    instance = start_instance(wait_for="/ready")
    for _ in range(8):  # warm both workers' pools
        assert requests.get(instance.url + "/", timeout=10).status_code == 200
    assert _terminate_backends(connection.settings_dict["NAME"]) >= 1
    statuses = [requests.get(instance.url + "/", timeout=10).status_code for _ in range(8)]
    assert statuses == [200] * 8


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_instance__pool_opens_in_workers_not_in_master(start_instance):
    instance = start_instance(wait_for="/ready")
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as admin:
        names = {
            row[0]
            for row in admin.execute(
                "SELECT application_name FROM pg_stat_activity WHERE datname = %s",
                [connection.settings_dict["NAME"]],
            )
        }
    assert f"omk-{instance.pid}" not in names
    assert any(name.startswith("omk-") for name in names)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_instance__every_worker_opens_its_pool_before_its_first_request(start_instance):
    """The probe that finds recovery done may reach either worker: neither opens a connection then."""
    instance = start_instance(wait_for="/health", WEB_CONCURRENCY="2")
    children = Path(f"/proc/{instance.pid}/task/{instance.pid}/children")
    # The master's other child, its startup process, names its connections after itself too.
    lead = Path(instance.env["OMK_RUN_DIR"]) / f"gunicorn-{instance.pid}.lead"
    deadline = time.monotonic() + 10
    while len(workers := set(children.read_text().split()) - {lead.read_text() if lead.exists() else ""}) < 2:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    expected = {f"omk-{pid}" for pid in workers}
    with psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True) as admin:
        while True:
            names = {
                row[0]
                for row in admin.execute(
                    "SELECT application_name FROM pg_stat_activity WHERE datname = %s",
                    [connection.settings_dict["NAME"]],
                )
            }
            if expected <= names:
                break
            assert time.monotonic() < deadline, (expected, names)
            time.sleep(0.05)

"""The backend's pool check against a real PostgreSQL whose backends are all terminated at once."""

import time

import pytest
from django.db import connection

from tests.support.postgres import admin_connect, backends_terminate


@pytest.mark.django_db(transaction=True)
def test_database_wrapper__every_idle_connection_broken__next_query_gets_a_fresh_one():
    connection.close()
    pool = connection.pool
    held = [pool.getconn() for _ in range(3)]
    pids = [conn.info.backend_pid for conn in held]
    for conn in held:
        pool.putconn(conn)
    with admin_connect() as admin:
        backends_terminate(admin, pids)

    # psycopg_pool's own check sleeps about 1 s, then 2 s, between two broken connections: with
    # three broken ones this query would fail after DB_POOL_TIMEOUT (2 s).
    started = time.monotonic()
    with connection.cursor() as cursor:
        cursor.execute("SELECT pg_backend_pid()")
        assert cursor.fetchone()[0] not in pids
    assert time.monotonic() - started < 1.0

"""connections_close: the thread's database connections, their pools on request, and Redis on request."""

import threading

import pytest
from django.db import connection

from core.connections import connections_close
from core.redis import redis_client


def _query() -> None:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")


@pytest.mark.django_db(transaction=True)
def test_connections_close__hands_the_connection_back_and_keeps_the_pools():
    _query()
    pool = connection.pool
    client = redis_client()
    redis_id = client.client_id()

    assert connections_close(pools=False, redis=False) == 1

    assert connection.connection is None
    assert not pool.closed
    assert client.client_id() == redis_id  # the Redis pool was left alone
    _query()  # and the database is reached again through the same pool
    assert connection.pool is pool


@pytest.mark.django_db(transaction=True)
def test_connections_close__closes_the_pools_and_redis_when_asked():
    _query()
    pool = connection.pool
    client = redis_client()
    redis_id = client.client_id()

    # The database connection, and the Redis pool counted as one.
    assert connections_close(pools=True, redis=True) == 2

    assert connection.connection is None
    assert pool.closed
    assert client.client_id() != redis_id  # a new Redis connection: the old one was closed
    _query()  # a new pool is opened on the next use
    assert connection.pool is not pool


def test_connections_close__only_the_calling_threads_connections():
    # A fresh thread has set up no database connection of its own: there is nothing to close.
    counts = []
    thread = threading.Thread(target=lambda: counts.append(connections_close(pools=False, redis=False)))
    thread.start()
    thread.join()
    assert counts == [0]

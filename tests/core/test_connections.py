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
@pytest.mark.parametrize(("pools", "redis", "closed"), [(False, False, 1), (True, True, 2)])
def test_connections_close__closes_the_connection_and_what_is_asked(pools, redis, closed):
    _query()
    pool = connection.pool
    redis_id = redis_client().client_id()

    # The database connection, and the Redis pool counted as one when asked.
    assert connections_close(pools=pools, redis=redis) == closed

    assert connection.connection is None
    assert pool.closed is pools
    # A Redis pool that was closed opens a new connection; one left alone still has its own.
    assert (redis_client().client_id() != redis_id) is redis
    _query()  # the database is reached again: through the same pool, or a new one
    assert (connection.pool is pool) is not pools


def test_connections_close__only_the_calling_threads_connections():
    # A fresh thread has set up no database connection of its own: there is nothing to close.
    counts = []
    thread = threading.Thread(target=lambda: counts.append(connections_close(pools=False, redis=False)))
    thread.start()
    thread.join()
    assert counts == [0]

"""Django's PostgreSQL backend, whose pooled connections are checked here instead of in the pool.

psycopg_pool's own check (what CONN_HEALTH_CHECKS turns on) finds broken connections one at a
time and sleeps its backoff (about 1 s, then 2 s) between two broken ones. A PostgreSQL restart
or failover breaks every idle connection at once, so a worker whose pool held two or more made
its next request wait past DB_POOL_TIMEOUT and answer 503 although the server was back. Here the
first broken connection makes the pool test all its idle ones at once (`ConnectionPool.check()`)
and the request takes a fresh one, with no backoff sleep.

That test runs beside the request, which waits for it no longer than the pool's own timeout: on
a path that drops packets each idle connection's test hangs until tcp_user_timeout, and the pool
tests them one after another, so a pool of N idle connections would hold the request N times
that long. On such a path the test outlasts the pool timeout and the request answers
"unavailable" after one tcp_user_timeout (the broken connection it took) and one pool timeout;
the test goes on in its thread and leaves the pool holding only connections that answered. A
test that ends in time is followed by the usual wait for a connection, at most another pool
timeout.
"""

import threading
from typing import Any

import psycopg
from django.db.backends.postgresql import base


class DatabaseWrapper(base.DatabaseWrapper):
    def get_new_connection(self, conn_params: dict[str, Any]) -> Any:
        connection = super().get_new_connection(conn_params)
        pool = self.pool  # type: ignore[attr-defined]  # Django 5.1+; not in django-stubs yet
        if pool is None:
            return connection
        try:
            pool.check_connection(connection)
        except psycopg.Error:
            # Put back broken, it is discarded and replaced; the others a restart broke go with it.
            pool.putconn(connection)
            checking = threading.Thread(target=pool.check, name="db-pool-check", daemon=True)
            checking.start()
            checking.join(timeout=pool.timeout)
            if checking.is_alive():
                raise psycopg.OperationalError(
                    f"the pool's idle connections to PostgreSQL did not answer within {pool.timeout} s"
                ) from None
            connection = super().get_new_connection(conn_params)
        return connection

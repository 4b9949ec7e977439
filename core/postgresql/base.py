"""Django's PostgreSQL backend, whose pooled connections are checked here instead of in the pool.

psycopg_pool's own check (what CONN_HEALTH_CHECKS turns on) finds broken connections one at a
time and sleeps its backoff (about 1 s, then 2 s) between two broken ones. A PostgreSQL restart
or failover breaks every idle connection at once, so a worker whose pool held two or more made
its next request wait past DB_POOL_TIMEOUT and answer 503 although the server was back. Here the
first broken connection makes the pool test all its idle ones at once (`ConnectionPool.check()`)
and the request takes a fresh one, with no backoff sleep.
"""

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
            pool.check()
            connection = super().get_new_connection(conn_params)
        return connection

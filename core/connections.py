"""The service's connections: Django's databases (and their psycopg pools) and Redis, named
after the process that opens them and closed when it is done."""

from __future__ import annotations


def connections_close(*, pools: bool, redis: bool) -> int:
    """Close the calling thread's Django database connections; return how many were closed.

    A connection from Django's psycopg pool goes back to its pool; `pools` closes the pools too
    (when the process is about to exit: nothing may be opened through them afterwards). `redis`
    disconnects the shared Redis pool as well (and counts it as one): only where no other thread
    still uses it, since that cuts their connections too. Before Django's settings are configured
    there is nothing to close.
    """
    from django.conf import settings

    if not settings.configured:
        return 0
    from django.db import connections

    closed = 0
    for conn in connections.all(initialized_only=True):
        conn.close()
        closed += 1
        close_pool = getattr(conn, "close_pool", None)
        if pools and close_pool is not None:
            close_pool()
    if redis:
        from core.redis import redis_client

        redis_client().connection_pool.disconnect()
        closed += 1
    return closed


def connections_name(*, pid: int) -> None:
    """Name the database connections this process opens after it (`application_name`).

    Settings are read once, in the gunicorn master, and every process forked from it would
    otherwise open its connections under the master's name (pg_stat_activity could not tell a
    worker's from another's)."""
    from django.conf import settings
    from django.db import connections

    name = f"omk-{pid}"
    for databases in (settings.DATABASES, connections.settings):
        for config in databases.values():
            if "application_name" in config.get("OPTIONS", {}):
                config["OPTIONS"]["application_name"] = name

"""Closing the service's connections: Django's databases (and their psycopg pools) and Redis."""

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

"""Which exceptions mean "a dependency is unavailable" (answered 503), not a bug (500).

The one classification of the service: the middleware, handler500, the session engine, the
lock, the hive's history fallback and readiness all ask it. A managed PostgreSQL or Redis that
fails over answers for a while with errors that are not "connection refused" and must be
counted the same:

- Redis: READONLY (a demoted primary, or a replica we were pointed at), LOADING (a restarted
  server reading its dataset), MASTERDOWN (a replica that lost its primary), TRYAGAIN (Redis
  Cluster during a slot move), a connection reset or timeout mid-command, and a write that too
  few replicas acknowledged in time (`ReplicaAckTimeout`, see core.redis).
- PostgreSQL: Django's OperationalError and InterfaceError (connection refused, lost mid-
  transaction, pool timeout), and by SQLSTATE whatever Django wraps in another class:
  admin_shutdown and crash_shutdown (a server stopping under us), cannot_connect_now (starting
  up, shutting down, a standby that takes no connections), read_only_sql_transaction (a
  standby, or a primary turned read-only), and the connection-exception class 08.
"""

from __future__ import annotations

import psycopg
from django.db import InterfaceError as DatabaseInterfaceError
from django.db import OperationalError as DatabaseOperationalError
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import MasterDownError, ReadOnlyError, RedisError, ResponseError, TryAgainError
from redis.exceptions import TimeoutError as RedisTimeoutError


class ReplicaAckTimeout(RedisError):
    """A write reached the Redis primary but fewer replicas than REDIS_MIN_REPLICAS_ACK confirmed
    it in time: it could vanish with the primary, so it is not acknowledged to the client."""


# For `except` clauses. BusyLoadingError (LOADING) is a ConnectionError; MasterDownError is
# redis-py's class for MASTERDOWN.
REDIS_UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    RedisTimeoutError,
    ReadOnlyError,
    MasterDownError,
    TryAgainError,
    ReplicaAckTimeout,
)
# Error replies that redis-py leaves as a plain ResponseError (e.g. relayed from a Lua script or
# EXEC, or min-replicas-to-write on the server), recognised by their error code.
_REDIS_UNAVAILABLE_CODES = ("READONLY", "LOADING", "MASTERDOWN", "TRYAGAIN", "NOREPLICAS", "CLUSTERDOWN")

# SQLSTATEs of a PostgreSQL that is going away, not yet there, or read-only.
DATABASE_UNAVAILABLE_SQLSTATES = frozenset(
    {
        "57P01",  # admin_shutdown
        "57P02",  # crash_shutdown
        "57P03",  # cannot_connect_now
        "25006",  # read_only_sql_transaction
    }
)

DEPENDENCY_ERRORS: tuple[type[BaseException], ...] = (
    DatabaseOperationalError,
    DatabaseInterfaceError,
    ConnectionInterrupted,
    *REDIS_UNAVAILABLE_ERRORS,
)


def redis_unavailable(exc: BaseException) -> bool:
    """True when `exc` itself (not its causes) is Redis being unavailable."""
    if isinstance(exc, REDIS_UNAVAILABLE_ERRORS):
        return True
    if isinstance(exc, ResponseError):
        return str(exc).split(" ", 1)[0] in _REDIS_UNAVAILABLE_CODES
    return False


def database_unavailable(exc: BaseException) -> bool:
    """True when `exc` itself (not its causes) is PostgreSQL being unavailable."""
    if isinstance(exc, (DatabaseOperationalError, DatabaseInterfaceError, psycopg.OperationalError)):
        return True
    if isinstance(exc, psycopg.Error):
        sqlstate = exc.sqlstate or ""
        return sqlstate in DATABASE_UNAVAILABLE_SQLSTATES or sqlstate.startswith("08")
    return False


def unavailable_dependency(exc: BaseException | None) -> str | None:
    """Name the unavailable dependency behind `exc` (following its causes), or None."""
    seen = 0
    while exc is not None and seen < 10:
        if database_unavailable(exc):
            return "database"
        if redis_unavailable(exc):
            return "redis"
        if isinstance(exc, ConnectionInterrupted) and exc.__cause__ is None:
            return "redis"  # django-redis without the error it wraps
        # Django's and django-redis's wrappers carry the driver's error as the cause: a bad
        # command (WRONGTYPE, a unique violation) stays a bug, answered 500.
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None

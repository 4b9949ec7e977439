"""Readiness checks, in django-health-check's form: a dataclass whose run() raises a typed error.

Both dependency checks ask what a request will need, a dependency that takes writes: during a
failover a demoted Redis primary still answers PING and a PostgreSQL standby still answers
SELECT 1, while every write would fail. The error names the cause (READONLY, LOADING, read-only
PostgreSQL, connection refused...).
"""

import dataclasses
import datetime

from django import db
from django.db import connections
from health_check.base import HealthCheck
from health_check.exceptions import ServiceUnavailable
from redis.exceptions import RedisError

from core.redis import redis_client
from lifecycle.drain import is_draining, is_recovered

# Written by every readiness probe (expires by itself): the cheapest command that a read-only
# Redis refuses.
READINESS_KEY = "omk:lifecycle:readiness-probe"


def _describe(exc: BaseException) -> str:
    first_line = (str(exc).strip().splitlines() or [""])[0]
    return f"{type(exc).__name__}: {first_line}"[:200]


@dataclasses.dataclass
class DatabaseCheck(HealthCheck):
    name = "database"
    alias = "default"

    @property
    def timeout(self) -> datetime.timedelta:
        # A dropped path makes the pooled connection's check wait until tcp_user_timeout breaks
        # it, then the pool waits for a new one: past django-health-check's default 5 s, which
        # would answer "Timed out" where the cause is known a moment later.
        options = connections[self.alias].settings_dict["OPTIONS"]
        tcp_user_timeout = options.get("tcp_user_timeout", 0) / 1000
        pool = options.get("pool")
        pool_timeout = pool.get("timeout", 0) if isinstance(pool, dict) else 0
        return max(datetime.timedelta(seconds=tcp_user_timeout + pool_timeout), HealthCheck.timeout)

    def run(self) -> None:
        try:
            with connections[self.alias].temporary_connection() as cursor:
                cursor.execute("SELECT current_setting('transaction_read_only')")
                (read_only,) = cursor.fetchone()
        except db.Error as exc:
            raise ServiceUnavailable(f"PostgreSQL is unavailable ({_describe(exc)})") from exc
        if read_only == "on":
            raise ServiceUnavailable(
                "PostgreSQL is read-only (a standby, or default_transaction_read_only): writes fail"
            )


@dataclasses.dataclass
class RedisCheck(HealthCheck):
    name = "redis"

    def run(self) -> None:
        try:
            redis_client().set(READINESS_KEY, "1", px=10_000)
        except RedisError as exc:
            raise ServiceUnavailable(f"Redis is unavailable ({_describe(exc)})") from exc


@dataclasses.dataclass
class NotDrainingCheck(HealthCheck):
    name = "draining"

    def run(self) -> None:
        if is_draining():
            raise ServiceUnavailable("The instance is draining and takes no new traffic")


@dataclasses.dataclass
class RecoveredCheck(HealthCheck):
    """503 until this instance's startup recovery has completed (see lifecycle.startup)."""

    name = "recovery"

    def run(self) -> None:
        if not is_recovered():
            raise ServiceUnavailable("Startup recovery has not completed yet")

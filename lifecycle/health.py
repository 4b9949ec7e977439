"""Readiness checks, in django-health-check's form: a dataclass whose run() raises a typed error."""

import dataclasses

from health_check.base import HealthCheck
from health_check.checks import Database
from health_check.exceptions import ServiceUnavailable
from redis.exceptions import RedisError

from core.redis import redis_client
from lifecycle.drain import is_draining, is_recovered


@dataclasses.dataclass
class DatabaseCheck(Database):
    name = "database"


@dataclasses.dataclass
class RedisCheck(HealthCheck):
    name = "redis"

    def run(self) -> None:
        try:
            redis_client().ping()
        except RedisError as exc:
            raise ServiceUnavailable(f"Redis is unreachable ({type(exc).__name__})") from exc


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

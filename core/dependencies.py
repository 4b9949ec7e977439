"""Which exceptions mean "a dependency is unreachable" (answered 503), not a bug (500)."""

from django.db import InterfaceError as DatabaseInterfaceError
from django.db import OperationalError as DatabaseOperationalError
from django_redis.exceptions import ConnectionInterrupted
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

DEPENDENCY_ERRORS: tuple[type[BaseException], ...] = (
    DatabaseOperationalError,
    DatabaseInterfaceError,
    RedisConnectionError,
    RedisTimeoutError,
    ConnectionInterrupted,
)


def unavailable_dependency(exc: BaseException | None) -> str | None:
    """Name the unreachable dependency behind `exc` (following its causes), or None."""
    seen = 0
    while exc is not None and seen < 10:
        if isinstance(exc, (DatabaseOperationalError, DatabaseInterfaceError)):
            return "database"
        if isinstance(exc, (RedisConnectionError, RedisTimeoutError, ConnectionInterrupted)):
            return "redis"
        exc = exc.__cause__ or exc.__context__
        seen += 1
    return None

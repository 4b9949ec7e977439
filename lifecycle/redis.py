"""The one Redis client of the service: django-redis's pool, shared by cache and lifecycle."""

from django_redis import get_redis_connection
from redis import Redis


def redis_client() -> Redis:
    return get_redis_connection("default")

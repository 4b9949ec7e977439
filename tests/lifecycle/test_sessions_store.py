"""Django user sessions live in Redis for an hour, refreshed on every use."""

import pytest
from django.conf import settings

from lifecycle.redis import redis_client


def _session_ttl(client) -> int:
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    redis_keys = redis_client().keys(f"*{key}*")
    assert len(redis_keys) == 1
    return redis_client().ttl(redis_keys[0])


@pytest.mark.django_db
def test_session__stored_in_redis_for_one_hour(client):
    assert client.get("/").status_code == 200
    assert 3590 <= _session_ttl(client) <= 3600


@pytest.mark.django_db
def test_session__expiry_slides_on_use(client):
    client.get("/")
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    redis_key = redis_client().keys(f"*{key}*")[0]
    redis_client().expire(redis_key, 60)
    response = client.get("/")
    assert b"Visits in this session: 2" in response.content
    assert _session_ttl(client) > 3500

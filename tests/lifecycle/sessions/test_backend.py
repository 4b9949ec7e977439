"""Django user sessions live in Redis for an hour, refreshed on every use."""

import pytest
from django.conf import settings

from core.redis import redis_client


def _session_ttl(client) -> int:
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    redis_keys = redis_client().keys(f"*{key}*")
    assert len(redis_keys) == 1
    return redis_client().ttl(redis_keys[0])


@pytest.fixture
def client(client, django_user_model):
    # A logged-in user: the home page keeps a session (visits) only for them.
    client.force_login(django_user_model.objects.create_user("visitor"))
    return client


@pytest.mark.django_db
def test_session__stored_in_redis_for_one_hour(client):
    assert client.get("/").status_code == 200
    assert 3590 <= _session_ttl(client) <= 3600


@pytest.mark.django_db
def test_session__anonymous_home_page_writes_no_session(db):
    from django.test import Client

    anonymous = Client()
    for _ in range(5):
        response = anonymous.get("/")
        assert response.status_code == 200
        assert settings.SESSION_COOKIE_NAME not in response.cookies
    assert redis_client().keys("*") == []


@pytest.mark.django_db
def test_session__expiry_slides_on_use(client):
    client.get("/")
    client.get("/")
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    redis_key = redis_client().keys(f"*{key}*")[0]
    redis_client().expire(redis_key, 60)
    response = client.get("/")
    assert b"Visits in this session: 3" in response.content
    assert _session_ttl(client) > 3500


@pytest.mark.django_db
def test_session__expiry_slides_on_a_read_only_request(client, django_user_model):
    # The read itself (GETEX) pushes the expiry: a session nobody writes to still slides, and the
    # browser gets the cookie again with a fresh max-age.
    client.force_login(django_user_model.objects.create_user("reader"))
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    redis_key = redis_client().keys(f"*{key}*")[0]
    redis_client().expire(redis_key, 60)
    response = client.get("/api/proposals/")
    assert response.status_code == 200
    assert _session_ttl(client) > 3500
    assert response.cookies[settings.SESSION_COOKIE_NAME]["max-age"] == settings.SESSION_COOKIE_AGE


@pytest.mark.django_db
def test_session__deleted_meanwhile_is_not_resurrected(client, django_user_model):
    # A logout elsewhere deletes the key while this request runs: writing the changed session
    # back must not bring it to life again (SET ... XX).
    from importlib import import_module

    client.get("/")
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key=key)
    store["visits"] = 5
    redis_client().delete(redis_client().keys(f"*{key}*")[0])
    from django.contrib.sessions.backends.base import UpdateError

    with pytest.raises(UpdateError):
        store.save()
    assert redis_client().keys(f"*{key}*") == []


@pytest.mark.django_db
def test_session__one_redis_round_trip_for_an_unchanged_session(client, django_user_model, monkeypatch):
    import redis

    client.force_login(django_user_model.objects.create_user("counted"))
    commands = []
    original = redis.Redis.execute_command

    def counting(self, *args, **kwargs):
        commands.append(args[0])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(redis.Redis, "execute_command", counting)
    assert client.get("/api/proposals/").status_code == 200
    # The session's one GETEX; the API throttle's counter is the other round trip (one script).
    assert commands == ["GETEX", "EVALSHA"]

"""Django user sessions live in Redis for an hour, refreshed on every use; the sync and the async
methods alike propagate a Redis outage (503, still logged in) and keep a session's own expiry."""

from datetime import timedelta
from importlib import import_module

import pytest
import redis
from asgiref.sync import async_to_sync
from django.conf import settings
from django.contrib.sessions.backends.base import UpdateError
from django.contrib.sessions.backends.cache import KEY_PREFIX
from django.core.cache import caches
from django.test import AsyncClient
from django.utils import timezone

from chaos.topology import free_port
from core.redis import redis_client
from lifecycle.sessions.backend import EXPIRY_KEY_PREFIX
from tests.support.dependencies import raised, use_redis


def _store(session_key=None):
    return import_module(settings.SESSION_ENGINE).SessionStore(session_key=session_key)


def _key(session_key: str, prefix: str = KEY_PREFIX) -> str:
    return caches[settings.SESSION_CACHE_ALIAS].client.make_key(prefix + session_key)


def _ttl_of(session_key: str) -> int:
    return redis_client().ttl(_key(session_key))


def _redis_down(settings) -> None:
    use_redis(settings, f"redis://127.0.0.1:{free_port()}/0", retries=False)


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


def _count_commands(monkeypatch, cls) -> list:
    commands: list = []
    original = cls.execute_command

    def counting(self, *args, **kwargs):
        commands.append(args[0])
        return original(self, *args, **kwargs)

    monkeypatch.setattr(cls, "execute_command", counting)
    return commands


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
    # The read itself pushes the expiry: a session nobody writes to still slides, and the
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
    client.get("/")
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    store = _store(key)
    store["visits"] = 5
    redis_client().delete(redis_client().keys(f"*{key}*")[0])
    with pytest.raises(UpdateError):
        store.save()
    assert redis_client().keys(f"*{key}*") == []


@pytest.mark.django_db
def test_session__one_redis_round_trip_for_an_unchanged_session(client, django_user_model, monkeypatch):
    client.force_login(django_user_model.objects.create_user("counted"))
    client.get("/api/proposals/")  # the scripts are loaded
    commands = _count_commands(monkeypatch, redis.Redis)
    assert client.get("/api/proposals/").status_code == 200
    # The session's read script; the API throttle's counter is the other round trip (one script).
    assert commands == ["EVALSHA", "EVALSHA"]


# --- A session's own expiry ----------------------------------------------------------------------


@pytest.mark.django_db
@pytest.mark.urls("tests.support.sessions_urls")
@pytest.mark.parametrize(
    ("expiry", "bound"), [(60, 60), (timezone.now() + timedelta(minutes=10), 600)], ids=["inactivity", "date"]
)
def test_session__a_read_keeps_its_own_expiry_even_when_the_request_fails(client, django_user_model, expiry, bound):
    client.force_login(django_user_model.objects.create_user("brief"))
    store = _store(client.cookies[settings.SESSION_COOKIE_NAME].value)
    store.set_expiry(expiry)
    store.save()
    client.raise_request_exception = False
    # The read, and then a 500: Django saves no session after a 500, so the read alone decides.
    assert client.get("/fails/").status_code == 500
    assert 0 < _ttl_of(store.session_key) <= bound


@pytest.mark.django_db
def test_session__a_read_slides_an_inactivity_expiry_by_its_own_length(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("sliding"))
    store = _store(client.cookies[settings.SESSION_COOKIE_NAME].value)
    store.set_expiry(60)
    store.save()
    redis_client().expire(_key(store.session_key), 20)  # 40 s of the 60 have passed
    assert client.get("/api/auth/me").status_code == 200
    assert 50 < _ttl_of(store.session_key) <= 60


@pytest.mark.django_db
def test_session__back_to_the_default_expiry_drops_the_mark(django_user_model):
    store = _store()
    store["x"] = 1
    store.set_expiry(60)
    store.save()
    assert redis_client().exists(_key(store.session_key, EXPIRY_KEY_PREFIX))
    store.set_expiry(None)
    store.save()
    assert not redis_client().exists(_key(store.session_key, EXPIRY_KEY_PREFIX))
    assert _ttl_of(store.session_key) > 3500
    assert not redis_client().keys(f"*{EXPIRY_KEY_PREFIX}*")


# --- A Redis outage: 503, and still logged in afterwards ------------------------------------------


@pytest.mark.django_db
def test_session__read_during_a_redis_outage_is_503_and_the_user_stays_logged_in(client, django_user_model, settings):
    client.force_login(django_user_model.objects.create_user("steady"))
    original = settings.CACHES
    _redis_down(settings)
    response = client.get("/api/auth/me")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    settings.CACHES = original
    assert client.get("/api/auth/me").json()["username"] == "steady"


@pytest.mark.django_db(transaction=True)
@pytest.mark.urls("tests.support.sessions_urls")
def test_session__async_read_during_a_redis_outage_is_503_and_the_user_stays_logged_in(
    client, django_user_model, settings
):
    client.force_login(django_user_model.objects.create_user("steady-async"))
    async_client = AsyncClient()
    async_client.cookies = client.cookies
    get = async_to_sync(async_client.get)
    assert get("/whoami/").json() == {"username": "steady-async"}
    original = settings.CACHES
    _redis_down(settings)
    response = get("/whoami/")
    assert response.status_code == 503
    assert response["Retry-After"] == "5"
    settings.CACHES = original
    assert get("/whoami/").json() == {"username": "steady-async"}


# --- The async methods: the sync ones' guarantees ------------------------------------------------


@pytest.mark.django_db
def test_session_async__same_semantics_and_one_round_trip_each(monkeypatch):
    store = _store()
    async_to_sync(store.acreate)()
    store["visits"] = 1
    async_to_sync(store.asave)()
    again = _store(store.session_key)
    assert async_to_sync(again.aexists)(store.session_key)
    commands = _count_commands(monkeypatch, redis.asyncio.Redis)
    assert async_to_sync(again.aget)("visits") == 1
    async_to_sync(again.asave)()  # unchanged: the read already slid the expiry
    assert commands == ["EVALSHA"]
    async_to_sync(again.aset_expiry)(60)
    async_to_sync(again.asave)()
    assert 0 < _ttl_of(store.session_key) <= 60
    # Deleted meanwhile (a logout elsewhere): a changed session is not resurrected.
    async_to_sync(_store(store.session_key).adelete)()
    again["visits"] = 2
    with pytest.raises(UpdateError):
        async_to_sync(again.asave)()
    assert not redis_client().keys(f"*{store.session_key}*")


@pytest.mark.django_db
def test_session_async__a_redis_outage_propagates_from_every_method(settings):
    store = _store()
    store["x"] = 1
    store.save()
    _redis_down(settings)

    async def aexists():
        return await _store().aexists(store.session_key)

    calls = {
        "aload": _store(store.session_key).aload,
        "asave": _store(store.session_key).asave,
        "aexists": aexists,
        "acreate": _store().acreate,
        "adelete": _store(store.session_key).adelete,
    }
    errors = {name: type(raised(async_to_sync(call))).__name__ for name, call in calls.items()}
    assert errors == dict.fromkeys(calls, "ConnectionError")

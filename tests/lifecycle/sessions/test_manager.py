"""session_manager: sessions in Redis that any instance (process) continues, changed atomically."""

import asyncio
import multiprocessing
import time

import pytest

from core.redis import redis_client
from lifecycle.sessions.manager import SessionNotFound, _key, async_session_manager, session_manager

PROCESSES = 4
UPDATES_PER_PROCESS = 50


def _ttl(session_id: str) -> int:
    return redis_client().ttl(_key(session_id))


def test_session_manager__create_and_get_round_trip():
    session_id = session_manager.create_session({"user": 7, "cart": [1, 2], "flags": {}})
    assert session_manager.get_session(session_id) == {"user": 7, "cart": [1, 2], "flags": {}}
    assert 3590 <= _ttl(session_id) <= 3600


def test_session_manager__empty_session_exists():
    session_id = session_manager.create_session({})
    assert session_manager.get_session(session_id) == {}


def test_session_manager__ids_are_unguessable():
    ids = {session_manager.create_session() for _ in range(200)}
    assert len(ids) == 200
    # token_urlsafe(32): 43 characters of base64url, 256 bits of randomness.
    assert all(len(i) == 43 for i in ids)


def test_session_manager__unknown_or_malformed_id_is_missing():
    assert session_manager.get_session("x" * 43) is None
    assert session_manager.get_session("../../etc") is None
    assert session_manager.delete_session("nope") is False
    with pytest.raises(SessionNotFound):
        session_manager.update_session("x" * 43, {"a": 1})


def test_session_manager__every_use_refreshes_the_ttl():
    session_id = session_manager.create_session({"a": 1})
    redis_client().expire(_key(session_id), 60)
    session_manager.get_session(session_id)
    assert _ttl(session_id) > 3500
    redis_client().expire(_key(session_id), 60)
    session_manager.update_session(session_id, {"b": 2})
    assert _ttl(session_id) > 3500


def test_session_manager__update_merges_and_removes():
    session_id = session_manager.create_session({"a": 1, "b": 2})
    assert session_manager.update_session(session_id, {"c": 3}, remove=["a"]) == {"b": 2, "c": 3}
    assert session_manager.get_session(session_id) == {"b": 2, "c": 3}


def test_session_manager__update_does_not_resurrect_a_deleted_session():
    session_id = session_manager.create_session({"a": 1})
    assert session_manager.delete_session(session_id) is True
    with pytest.raises(SessionNotFound):
        session_manager.update_session(session_id, {"a": 2})
    assert redis_client().exists(_key(session_id)) == 0


def test_session_manager__reserved_and_bad_keys_are_refused():
    session_id = session_manager.create_session()
    with pytest.raises(ValueError, match="reserved"):
        session_manager.update_session(session_id, {"__version__": 1})
    with pytest.raises(ValueError, match="non-empty"):
        session_manager.update_session(session_id, {"": 1})


def test_session_manager__expires_after_ttl(settings):
    settings.SESSIONS_TTL_SECONDS = 1
    session_id = session_manager.create_session({"a": 1})
    time.sleep(1.3)
    assert session_manager.get_session(session_id) is None


def _update_many(session_id: str, worker: int) -> None:
    for n in range(UPDATES_PER_PROCESS):
        session_manager.update_session(session_id, {f"w{worker}-{n}": n})
        session_manager.increment_session(session_id, "count")


def test_session_manager__concurrent_updates_from_processes_are_all_kept():
    session_id = session_manager.create_session({"count": 0})
    # fork: the children inherit the configured Django; redis-py opens fresh connections per pid.
    context = multiprocessing.get_context("fork")
    workers = [context.Process(target=_update_many, args=(session_id, w)) for w in range(PROCESSES)]
    for process in workers:
        process.start()
    for process in workers:
        process.join(60)
        assert process.exitcode == 0
    data = session_manager.get_session(session_id)
    assert data["count"] == PROCESSES * UPDATES_PER_PROCESS
    expected = {f"w{w}-{n}" for w in range(PROCESSES) for n in range(UPDATES_PER_PROCESS)}
    assert expected <= set(data)


def test_async_session_manager__same_operations():
    async def scenario():
        session_id = await async_session_manager.create_session({"a": 1})
        await asyncio.gather(*(async_session_manager.increment_session(session_id, "n") for _ in range(50)))
        await async_session_manager.update_session(session_id, {"b": [1]})
        data = await async_session_manager.get_session(session_id)
        assert await session_manager.adelete_session(session_id) is True
        return session_id, data

    session_id, data = asyncio.run(scenario())
    assert data == {"a": 1, "n": 50, "b": [1]}
    assert session_manager.get_session(session_id) is None


@pytest.mark.django_db
def test_session_manager__count_sessions_counts_both_kinds(client, django_user_model):
    client.force_login(django_user_model.objects.create_user("counted"))  # a Django user session
    session_manager.create_session({"a": 1})
    session_manager.create_session({"b": 2})
    assert session_manager.count_sessions(include_user_sessions=False) == 2
    assert session_manager.count_sessions() == 3


@pytest.mark.django_db
def test_session_manager__count_reachable_for_recovery(client, django_user_model):
    session_manager.create_session()
    client.force_login(django_user_model.objects.create_user("reachable"))
    assert session_manager.count_reachable(deadline=time.monotonic() + 5) == 2


def test_session_manager__count_reachable_is_shared_for_its_max_age(settings):
    session_manager.create_session()
    assert session_manager.count_reachable(deadline=time.monotonic() + 5) == 1
    session_manager.create_session()
    # Another instance's pass within the max age: the shared count, no second SCAN.
    assert session_manager.count_reachable(deadline=time.monotonic() + 5) == 1
    settings.SESSIONS_COUNT_MAX_AGE_SECONDS = 0
    assert session_manager.count_reachable(deadline=time.monotonic() + 5) == 2

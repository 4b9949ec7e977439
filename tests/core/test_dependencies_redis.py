"""What a Redis failover answers, from real servers, is "dependency unavailable": 503 with
Retry-After, readiness naming it, nothing half-written.

The module's servers (tests/core/conftest.py `redis_servers`, never the shared Redis): a primary,
its replica (READONLY for writes), a replica whose primary is gone with replica-serve-stale-data
off (MASTERDOWN), a server made to load its dataset slowly (LOADING), and a proxy that resets a
connection after the command reached the server (the reply is lost).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
from redis._parsers import BaseParser
from redis.backoff import NoBackoff
from redis.retry import Retry

from chaos.topology import RedisServer, wait_until
from core.dependencies import unavailable_dependency
from core.redis import redis_client
from lifecycle.idempotency.models import IdempotencyRecord
from tests.core.conftest import KEY_LOAD_DELAY_US
from tests.support.dependencies import raised, use_redis

pytestmark = pytest.mark.django_db

# Against LOADING the configured retries (of the command and of each reconnection) only add
# their backoffs, about 4 s, before the same answer: those tests go without them.


@contextmanager
def _loading(server: RedisServer) -> Iterator[None]:
    """The server is LOADING (reading its dataset again) for the duration of the block."""
    admin = redis.Redis(port=server.port)
    admin.config_set("key-load-delay", KEY_LOAD_DELAY_US)
    reload = threading.Thread(
        target=lambda: redis.Redis(port=server.port, socket_timeout=30).execute_command("DEBUG", "RELOAD")
    )
    reload.start()
    assert wait_until(lambda: admin.info("persistence")["loading"] == 1, 5, interval=0.02)
    try:
        yield
    finally:
        admin.config_set("key-load-delay", 0)  # CONFIG is served while loading
        reload.join(timeout=30)


def _assert_503(response) -> None:
    assert response.status_code == 503, response.content
    assert response["Retry-After"] == "5"
    assert response.json()["dependency"] == "redis"


# --- The errors themselves, as real redis_servers send them -------------------------------------------


def test_unavailable_dependency__real_failover_errors_are_redis(redis_servers):
    replica = redis.Redis(port=redis_servers.replica.port)
    stale = redis.Redis(port=redis_servers.stale.port)
    errors = {
        "READONLY": raised(lambda: replica.set("k", "v")),
        "READONLY in a script": raised(lambda: replica.eval("return redis.call('SET', KEYS[1], 'v')", 1, "k")),
        "READONLY in MULTI": raised(lambda: replica.pipeline(transaction=True).set("k", "v").incr("n").execute()),
        "MASTERDOWN": raised(lambda: stale.get("k")),
        # Redis Cluster's only: parsed by redis-py's own parser from the server's reply line.
        "TRYAGAIN": BaseParser.parse_error("TRYAGAIN Multiple keys request during rehashing of slot"),
    }
    with _loading(redis_servers.loading):
        # No retries (redis-py's default would retry LOADING until the load is over).
        no_retry = redis.Redis(port=redis_servers.loading.port, retry=Retry(NoBackoff(), 0))
        errors["LOADING"] = raised(lambda: no_retry.get("k"))
    assert {name: unavailable_dependency(exc) for name, exc in errors.items()} == dict.fromkeys(errors, "redis")


def test_unavailable_dependency__a_bad_command_is_not_an_outage(redis_servers):
    client = redis.Redis(port=redis_servers.primary.port)
    client.set("a-string", "v")
    wrong_type = raised(lambda: client.lpush("a-string", "x"))
    assert unavailable_dependency(wrong_type) is None


# --- Through the service's requests ----------------------------------------------------------------


def test_board_post__on_a_read_only_replica_is_503_and_nothing_is_stored(api_client, settings, redis_servers):
    original = settings.CACHES
    use_redis(settings, redis_servers.replica.url)
    headers = {"Idempotency-Key": "board-readonly"}
    response = api_client.post("/api/board/", {"body": "hello"}, content_type="application/json", headers=headers)
    _assert_503(response)
    assert not IdempotencyRecord.objects.exists()

    settings.CACHES = original
    retried = api_client.post("/api/board/", {"body": "hello"}, content_type="application/json", headers=headers)
    assert retried.status_code == 201
    assert api_client.get("/api/board/").json()["count"] == 1


def test_queue_publish_claim_ack__on_a_read_only_replica_are_503(api_client, own_queues, settings, redis_servers):
    own_queues("jobs")
    # A message claimed on the primary: acking it on the replica is a write the replica refuses
    # (an id not pending would write nothing, and answer not_pending).
    use_redis(settings, redis_servers.primary.url)
    published = api_client.post("/api/queues/jobs/", {"body": "x"}, content_type="application/json").json()["id"]
    api_client.post("/api/queues/jobs/claim", {"consumer": "c"}, content_type="application/json")
    replicated = redis.Redis(port=redis_servers.replica.port)
    assert wait_until(lambda: replicated.xpending("omk:queue:jobs", "bees")["pending"] == 1, 5)
    use_redis(settings, redis_servers.replica.url)
    _assert_503(api_client.post("/api/queues/jobs/", {"body": "x"}, content_type="application/json"))
    _assert_503(api_client.post("/api/queues/jobs/claim", {"consumer": "c"}, content_type="application/json"))
    ack = {"ids": [published], "consumer": "c"}
    _assert_503(api_client.post("/api/queues/jobs/ack", ack, content_type="application/json"))


def test_queue_publish__on_a_loading_redis_is_503(api_client, own_queues, settings, redis_servers):
    own_queues("jobs")
    use_redis(settings, redis_servers.loading.url, retries=False)
    with _loading(redis_servers.loading):
        _assert_503(api_client.post("/api/queues/jobs/", {"body": "x"}, content_type="application/json"))


@pytest.mark.urls("tests.support.idempotency_urls")
def test_lock__on_a_read_only_replica_is_503(api_client, settings, redis_servers):
    use_redis(settings, redis_servers.replica.url)
    # The lock fails closed: no grant without a writable Redis.
    _assert_503(api_client.post("/api/busy/"))


def test_session__read_on_a_read_only_replica_is_503_and_the_user_stays_logged_in(
    client, user, settings, redis_servers
):
    use_redis(settings, redis_servers.primary.url)
    client.force_login(user)
    assert client.get("/api/auth/me").status_code == 200
    replicated = redis.Redis(port=redis_servers.replica.port)
    assert wait_until(lambda: replicated.dbsize() >= redis.Redis(port=redis_servers.primary.port).dbsize(), 5)
    # The replica has the session; the read slides its expiry, a write the replica refuses.
    use_redis(settings, redis_servers.replica.url)
    _assert_503(client.get("/api/auth/me"))
    use_redis(settings, redis_servers.primary.url)
    assert client.get("/api/auth/me").status_code == 200


def test_conversation_read__hot_history_masterdown_falls_back_to_postgresql(api_client, user, settings, redis_servers):
    from hive.services import conversation_create, turn_append

    conversation = conversation_create(owner=user)
    turn_append(conversation_id=conversation.id, user=user, role="user", content="kept in PostgreSQL")
    use_redis(settings, redis_servers.stale.url)
    response = api_client.get(f"/api/conversations/{conversation.id}/")
    assert response.status_code == 200
    assert [turn["content"] for turn in response.json()["turns"]] == ["kept in PostgreSQL"]


@pytest.mark.parametrize("server", ["replica", "loading"])
def test_ready__names_the_redis_that_refuses_writes(client, settings, redis_servers, server):
    use_redis(settings, getattr(redis_servers, server).url, retries=False)
    if server == "loading":
        with _loading(redis_servers.loading):
            response = client.get("/ready")
        expected = "BusyLoadingError"
    else:
        response = client.get("/ready")
        expected = "ReadOnlyError"
    assert response.status_code == 503
    assert expected in response.json()["checks"]["redis"]
    assert response.json()["checks"]["database"] == "ok"


def test_queue_publish__reply_lost_to_a_connection_reset_is_published_once(
    api_client, own_queues, settings, redis_servers
):
    own_queues("warm-up", "once")
    use_redis(settings, f"redis://127.0.0.1:{redis_servers.proxy.port}/0")
    assert api_client.post("/api/queues/warm-up/", {"body": "x"}, content_type="application/json").status_code == 201
    redis_client().delete("omk:queue:once")
    resets = redis_servers.proxy.reset_count
    redis_servers.proxy.reset_next(1)
    response = api_client.post("/api/queues/once/", {"body": "x"}, content_type="application/json")
    assert redis_servers.proxy.reset_count == resets + 1
    # redis-py sent the script again on a new connection; the call's mark found the first message.
    assert response.status_code == 201
    assert redis.Redis(port=redis_servers.primary.port).xlen("omk:queue:once") == 1


def test_queue_publish__connection_reset_on_every_attempt_is_503(api_client, own_queues, settings, redis_servers):
    own_queues("warm-up", "always-reset")
    use_redis(settings, f"redis://127.0.0.1:{redis_servers.proxy.port}/0")
    assert api_client.post("/api/queues/warm-up/", {"body": "x"}, content_type="application/json").status_code == 201
    redis_servers.proxy.reset_next(100)
    started = time.monotonic()
    try:
        _assert_503(api_client.post("/api/queues/always-reset/", {"body": "x"}, content_type="application/json"))
    finally:
        redis_servers.proxy.reset_next(0)
    assert time.monotonic() - started < 5

"""Redis behind Sentinel, and writes that survive a failover, against real servers started by
the tests on free ports: a primary and its replica (tests/core/conftest.py), and a primary, its
replica and three Sentinels (Debian's redis-sentinel).

- REDIS_MIN_REPLICAS_ACK: a board post, a queue publish or ack, a session write is acknowledged
  only once a replica has it (WAIT on the same connection); a replica that does not confirm in
  time (here: SIGSTOPped) makes it a 503, and the client's retry with its Idempotency-Key is one
  effect.
- Sentinel: the primary is SIGKILLed under requests; the Sentinels promote the replica and every
  client (django-redis's pool behind the API and the sync lock, the async client, the gunicorn
  master's heartbeat client) follows it without a restart; during the switch requests are 503
  with Retry-After, never 500.
"""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
import redis
import requests
from asgiref.sync import async_to_sync

from chaos.topology import RedisGroup, free_port, wait_until
from core.dependencies import ReplicaAckTimeout, unavailable_dependency
from core.redis import async_redis_client, build_redis_client, redis_client
from hive.services import board_index_key, board_post_create, board_post_key
from lifecycle.idempotency.models import IdempotencyRecord
from lifecycle.locks import distributed_lock
from lifecycle.registry import heartbeat_key
from lifecycle.sessions.manager import session_manager
from tests.support.dependencies import raised, use_redis, use_sentinels

pytestmark = pytest.mark.django_db

# The Sentinels' part of a failover: their down-after (1 s), their vote and the promotion, 2 to
# 3 s here. Redis's own timers, not the service's: a vote that fails (split, or no replica whose
# INFO is fresh enough) is tried again after twice the failover-timeout (6 s), and a Sentinel
# whose timer stalls past 2 s on a loaded machine stops acting for 30 s (TILT). Waited for.
PROMOTION_BOUND_SECONDS = 60
# The clients' part, the service's: from the moment every Sentinel names the promoted replica
# to the first write that succeeds through the instance.
FOLLOW_BOUND_SECONDS = 5
# The Sentinels make a restarted old primary a replica once it has reported itself a primary
# for 8 s, at their next INFO to it (every 10 s): about 10 s, plus the resynchronisation.
REJOIN_BOUND_SECONDS = 40


def _group(tmp_path_factory, name: str) -> RedisGroup:
    group = RedisGroup(tmp_path_factory.mktemp(name), master_name=f"omk-{uuid.uuid4().hex[:8]}", persistent=False)
    group.start()
    return group


def _sentinel_events(group: RedisGroup) -> str:
    """The Sentinels' own account (votes, promotions, TILT, aborts): what a failure needs."""
    lines = []
    for index, sentinel in enumerate(group.sentinels):
        log = sentinel.dir / "sentinel.log"
        text = log.read_text(errors="replace") if log.exists() else ""
        events = [line for line in text.splitlines() if " # " in line]
        lines += [f"sentinel-{index}: {line}" for line in events[-15:]]
    return "\n".join(lines)


@contextmanager
def _stopped(server) -> Iterator[None]:
    """The server is SIGSTOPped (alive to the kernel, silent to Redis: a replica that never acks)."""
    os.kill(server.process.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.process.pid, signal.SIGCONT)


def _post(client, path: str, body: dict, key: str | None = None):
    headers = {"Idempotency-Key": key} if key else {}
    return client.post(path, body, content_type="application/json", headers=headers)


def _assert_503(response) -> None:
    assert response.status_code == 503, response.content
    assert response["Retry-After"] == "5"
    assert response.json()["dependency"] == "redis"


# --- REDIS_MIN_REPLICAS_ACK ------------------------------------------------------------------------


def test_min_replicas_ack__board_post_is_503_until_a_replica_has_it_then_one_post(api_client, settings, redis_servers):
    use_redis(settings, redis_servers.primary.url)
    settings.OMK_REDIS_MIN_REPLICAS_ACK = 1
    assert _post(api_client, "/api/board/", {"body": "warm-up"}).status_code == 201  # the script loaded
    primary = redis.Redis(port=redis_servers.primary.port)
    before = primary.zcard(board_index_key())
    with _stopped(redis_servers.replica):
        started = time.monotonic()
        _assert_503(_post(api_client, "/api/board/", {"body": "kept?"}, key="wait-board"))
        assert time.monotonic() - started < 3  # the WAIT's own bound (0.5 s), then the answer
        assert not IdempotencyRecord.objects.exists()
    retried = _post(api_client, "/api/board/", {"body": "kept?"}, key="wait-board")
    assert retried.status_code == 201
    # The first attempt's post was on the primary already: the retry found it, and added none.
    assert primary.zcard(board_index_key()) == before + 1
    assert redis.Redis(port=redis_servers.replica.port).exists(board_post_key(retried.json()["id"]))


def test_min_replicas_ack__a_retry_that_finds_its_write_waits_for_that_write(settings, redis_servers):
    use_redis(settings, redis_servers.primary.url)
    settings.OMK_REDIS_MIN_REPLICAS_ACK = 1
    pool = redis_client().connection_pool
    board_post_create(author="alice", body="warm-up")  # the script loaded
    # A connection whose last write is one that waits for no replica (a throttle's counter, a
    # heartbeat), and that the replica has.
    older = pool.get_connection()
    older.send_command("SET", "omk:test:unwaited", "1")
    assert older.read_response() == b"OK"
    primary = redis.Redis(port=redis_servers.primary.port)

    def replica_has_everything() -> bool:
        info = primary.info("replication")
        return info["slave0"]["offset"] >= info["master_repl_offset"]

    assert wait_until(replica_has_everything, timeout=10)
    with _stopped(redis_servers.replica):
        attempt = lambda: board_post_create(author="alice", body="unreplicated", dedupe="wait-retry")  # noqa: E731
        assert isinstance(raised(attempt), ReplicaAckTimeout)  # on another connection
        # The retry on the older connection (a worker thread's pool hands out any): the script
        # finds the post and writes nothing. WAIT is documented to wait for the connection's own
        # earlier writes; Redis 7.0 waits for the primary's whole offset after any command on the
        # connection, so the dedupe's WAIT covers the first attempt's write. Pinned here: without
        # it the retry would be acknowledged while the replica lacks the post.
        pool.release(older)
        assert isinstance(raised(attempt), ReplicaAckTimeout)
    assert board_post_create(author="alice", body="unreplicated", dedupe="wait-retry").body == "unreplicated"


def test_min_replicas_ack__a_demoted_primary_refusing_wait_is_unavailable(settings, redis_servers):
    """A retry whose script only finds its mark writes nothing, so a server demoted to replica
    under it runs the script and refuses only the WAIT: that is READONLY's case, a 503."""
    use_redis(settings, redis_servers.primary.url)
    settings.OMK_REDIS_MIN_REPLICAS_ACK = 1
    board_post_create(author="alice", body="once", dedupe="demoted")
    use_redis(settings, redis_servers.replica.url)  # what the pool holds after the failover
    error = raised(lambda: board_post_create(author="alice", body="once", dedupe="demoted"))
    assert isinstance(error, redis.ReadOnlyError), repr(error)
    assert unavailable_dependency(error) == "redis"


def test_min_replicas_ack__zero_acknowledges_without_waiting(api_client, own_queues, settings, redis_servers):
    own_queues("unwaited")
    use_redis(settings, redis_servers.primary.url)
    settings.OMK_REDIS_MIN_REPLICAS_ACK = 0
    with _stopped(redis_servers.replica):
        assert _post(api_client, "/api/board/", {"body": "unwaited"}).status_code == 201
        assert _post(api_client, "/api/queues/unwaited/", {"body": "x"}).status_code == 201


def test_min_replicas_ack__queue_publish_ack_and_session_writes_wait_too(
    api_client, client, user, own_queues, settings, redis_servers
):
    own_queues("acked")
    use_redis(settings, redis_servers.primary.url)
    settings.OMK_REDIS_MIN_REPLICAS_ACK = 1
    published = _post(api_client, "/api/queues/acked/", {"body": "x"})
    assert published.status_code == 201
    claimed = _post(api_client, "/api/queues/acked/claim", {"consumer": "c"}).json()["messages"]
    login = {"username": user.username, "password": "alice-password-1"}
    with _stopped(redis_servers.replica):
        _assert_503(_post(api_client, "/api/queues/acked/", {"body": "y"}))
        ack = {"ids": [claimed[0]["id"]], "consumer": "c"}
        _assert_503(_post(api_client, "/api/queues/acked/ack", ack, key="ack-1"))
        _assert_503(_post(client, "/api/auth/login", login))
        assert isinstance(raised(lambda: session_manager.create_session({"a": 1})), ReplicaAckTimeout)
        assert isinstance(raised(async_to_sync(_async_create)), ReplicaAckTimeout)
    # The refused ack had acked it on the primary: its retry (same key) answers that it acked it;
    # another ack finds it no longer pending, and it stays done.
    assert _post(api_client, "/api/queues/acked/ack", ack, key="ack-1").json() == {
        "acked": [claimed[0]["id"]],
        "not_pending": [],
    }
    assert _post(api_client, "/api/queues/acked/ack", ack).json() == {"acked": [], "not_pending": [claimed[0]["id"]]}
    assert redis.Redis(port=redis_servers.primary.port).xpending("omk:queue:acked", "bees")["pending"] == 0
    assert _post(client, "/api/auth/login", login).status_code == 200


def test_min_replicas_ack__a_claim_hands_out_no_message_a_replica_lacks(
    api_client, own_queues, settings, redis_servers
):
    """A refused publish's message is on the primary only: a failover could take it back and the
    publisher's retry add it again, so no consumer may be handed it before a replica has it."""
    own_queues("unreplicated")
    use_redis(settings, redis_servers.primary.url)
    settings.OMK_REDIS_MIN_REPLICAS_ACK = 1
    settings.QUEUES_VISIBILITY_TIMEOUT_SECONDS = 0.2
    claim = {"consumer": "c"}
    assert _post(api_client, "/api/queues/unreplicated/claim", claim).json()["messages"] == []
    with _stopped(redis_servers.replica):
        # A claim that hands out nothing needs no replica.
        assert _post(api_client, "/api/queues/unreplicated/claim", claim).json()["messages"] == []
        _assert_503(_post(api_client, "/api/queues/unreplicated/", {"body": "maybe"}, key="pub-1"))
        _assert_503(_post(api_client, "/api/queues/unreplicated/claim", claim))
    published = _post(api_client, "/api/queues/unreplicated/", {"body": "maybe"}, key="pub-1")
    assert published.status_code == 201
    time.sleep(0.3)  # the refused claim's hold on it has passed
    messages = _post(api_client, "/api/queues/unreplicated/claim", claim).json()["messages"]
    assert [(m["id"], m["body"], m["redelivered"]) for m in messages] == [(published.json()["id"], "maybe", True)]


async def _async_create() -> str:
    from lifecycle.sessions.manager import async_session_manager

    return await async_session_manager.create_session({"a": 1})


def test_sentinel__no_sentinel_answers_is_503(api_client, settings):
    use_sentinels(settings, [("127.0.0.1", free_port()), ("127.0.0.1", free_port())], "omk-nowhere")
    _assert_503(_post(api_client, "/api/board/", {"body": "x"}))


# --- A failover under requests ---------------------------------------------------------------------


async def _async_roundtrip(key: str) -> bytes | None:
    client = async_redis_client()
    await client.set(key, "async", px=60_000)
    return await client.get(key)


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_sentinel__primary_killed__every_client_follows_the_promoted_replica(
    tmp_path_factory, settings, start_instance, api_client, api_token
):
    group = _group(tmp_path_factory, "redis-failover")
    try:
        use_sentinels(settings, group.addresses, group.master_name)
        instance = start_instance(
            wait_for="/ready",
            REDIS_URL="redis://unused/0",
            REDIS_SENTINELS=",".join(f"{host}:{port}" for host, port in group.addresses),
            REDIS_SENTINEL_MASTER=group.master_name,
            INSTANCE_HEARTBEAT_INTERVAL="0.5",
        )
        headers = {"Authorization": f"Bearer {api_token}"}

        def post(body: str) -> requests.Response:
            return requests.post(instance.url + "/api/board/", json={"body": body}, headers=headers, timeout=15)

        # Acknowledged once the replica has it: it must survive the primary.
        settings.OMK_REDIS_MIN_REPLICAS_ACK = 1
        acknowledged = _post(api_client, "/api/board/", {"body": "before the failover"})
        assert acknowledged.status_code == 201
        settings.OMK_REDIS_MIN_REPLICAS_ACK = 0
        assert post("through the instance").status_code == 201
        with distributed_lock.acquire("sentinel-before", ttl=5):
            pass
        assert async_to_sync(_async_roundtrip)("sentinel:async") == b"async"
        heartbeat_client = build_redis_client()  # the gunicorn master's kind, built before the kill
        heartbeat_client.set("sentinel:heartbeat", "1")
        (beat,) = group.server(group.primary.port).keys(heartbeat_key("*"))

        old = group.primary_port()
        assert old == group.primary.port

        def promoted() -> bool:
            """Every Sentinel names the replica, and it says it is the primary."""
            try:
                return group.promoted(group.replica)
            except redis.RedisError:
                return False

        group.primary.crash()
        killed_at = time.monotonic()
        promoted_at = None
        statuses = []
        while time.monotonic() - killed_at < PROMOTION_BOUND_SECONDS + FOLLOW_BOUND_SECONDS:
            if promoted_at is None and promoted():
                promoted_at = time.monotonic()
            response = post(f"during {len(statuses)}")
            statuses.append(response.status_code)
            if response.status_code == 201:
                break
            assert response.status_code == 503, response.text
            assert response.headers["Retry-After"] == "5"
            assert promoted_at is None or time.monotonic() - promoted_at < FOLLOW_BOUND_SECONDS, statuses
            time.sleep(0.2)
        recovered_at = time.monotonic()
        assert statuses[-1] == 201, f"{statuses}\n{_sentinel_events(group)}"
        assert set(statuses) <= {201, 503}
        # Every Sentinel names the replica (the instance may have asked one that knew first).
        assert wait_until(promoted, PROMOTION_BOUND_SECONDS, interval=0.05), _sentinel_events(group)
        promoted_at = promoted_at or time.monotonic()
        assert recovered_at - promoted_at < FOLLOW_BOUND_SECONDS, statuses
        print(
            f"\nwrites succeeded again {recovered_at - killed_at:.1f} s after the primary's death, "
            f"{recovered_at - promoted_at:+.1f} s after the Sentinels promoted the replica: {statuses}"
        )

        new = group.primary_port()
        assert new == group.replica.port
        survivor = group.server(new)
        assert survivor.exists(board_post_key(acknowledged.json()["id"]))

        # Every other client follows, without a restart of anything.
        with distributed_lock.acquire("sentinel-after", ttl=5):
            pass
        assert async_to_sync(_async_roundtrip)("sentinel:async-after") == b"async"
        assert redis_client().get("sentinel:async-after") == b"async"
        heartbeat_client.set("sentinel:heartbeat", "2")
        assert survivor.get("sentinel:heartbeat") == b"2"
        survivor.delete(beat)  # the instance's master keeps beating, now on the new primary
        assert wait_until(lambda: survivor.exists(beat), 10)

        # The old primary comes back as the new one's replica: writes that wait for one succeed.
        group.primary.start()
        rejoined = group.server(group.primary.port)

        def in_sync() -> bool:
            """The primary counts a replica online once the snapshot is sent, before the replica
            has loaded it and can acknowledge anything: the replica's own view says when."""
            try:
                link = rejoined.info("replication")
            except redis.RedisError:
                return False
            online = survivor.info("replication").get("slave0", {}).get("state") == "online"
            return online and link.get("master_link_status") == "up" and not link.get("master_sync_in_progress")

        assert wait_until(in_sync, REJOIN_BOUND_SECONDS)
        settings.OMK_REDIS_MIN_REPLICAS_ACK = 1
        # An acknowledgement within 0.5 s: a loaded machine can miss one, which is a 503 to retry.
        after = []
        while len(after) < 5 and 201 not in after:
            after.append(_post(api_client, "/api/board/", {"body": f"after the failover {len(after)}"}).status_code)
        assert after[-1] == 201, after
        assert set(after) <= {201, 503}, after
    finally:
        group.stop()


# --- A reply that comes too late -------------------------------------------------------------------


def test_sentinel__a_timed_out_command_leaves_no_late_reply_for_the_next(tmp_path_factory, settings):
    """A command that timed out is not retried (settings/base.py); its connection must not go
    back to the pool with the reply still on its way, or the next command reads that reply."""
    import inspect

    from redis.sentinel import SentinelManagedConnection

    # Pins why core.redis.SentinelConnection exists: redis-py's keeps a connection on a failed read.
    default = inspect.signature(SentinelManagedConnection.read_response).parameters["disconnect_on_error"].default
    assert default is False
    group = _group(tmp_path_factory, "redis-late-reply")
    try:
        settings.REDIS_SOCKET_TIMEOUT = 0.2
        use_sentinels(settings, group.addresses, group.master_name)
        caches = settings.CACHES
        caches["default"]["OPTIONS"]["SOCKET_TIMEOUT"] = 0.2
        settings.CACHES = caches
        for client in (redis_client(), build_redis_client()):
            key = f"late-{uuid.uuid4().hex}"
            # BLPOP answers (nil) after 0.5 s, past the client's 0.2 s: a reply that comes late.
            with pytest.raises(redis.TimeoutError):
                client.blpop([key], timeout=0.5)
            time.sleep(0.6)
            assert client.echo("mine") == b"mine"
            client.connection_pool.disconnect()
    finally:
        group.stop()


def test_sentinel__sentinels_that_never_answer_are_asked_once_per_call(settings):
    """Sentinels on a path that drops packets (listeners that accept and never answer): one call
    asks each once (0.5 s each) and fails; redis-py retried the asking inside the command's own
    retries, several times over."""
    import socket

    from redis.sentinel import MasterNotFoundError, SentinelManagedConnection

    # Pins the redis-py step core.redis.SentinelConnection.connect runs without retrying it.
    assert callable(SentinelManagedConnection._connect_retry)
    listeners = [socket.create_server(("127.0.0.1", 0)) for _ in range(3)]
    try:
        use_sentinels(settings, [("127.0.0.1", s.getsockname()[1]) for s in listeners], "omk-silent")
        for client in (redis_client(), build_redis_client()):
            started = time.monotonic()
            with pytest.raises(MasterNotFoundError):
                client.set("k", "v")
            took = time.monotonic() - started
            # Three Sentinels, 0.5 s each, once: 1.5 s (retried: 6 s, and more with the command's).
            assert took < 3.0, f"{took:.1f} s"
            client.connection_pool.disconnect()
    finally:
        for listener in listeners:
            listener.close()

"""Writes to Redis under an Idempotency-Key happen once, even when the first attempt's
PostgreSQL transaction (which holds the key) never committed: the instance died between the
Redis write and COMMIT, and the client retried with the same key."""

import pytest

from core.redis import redis_client
from hive.selectors import board_post_list
from hive.services import board_post_create
from lifecycle.idempotency.models import IdempotencyRecord
from lifecycle.queues.services import queue_publish

pytestmark = pytest.mark.django_db


def test_board_post_create__same_dedupe_posts_once():
    first = board_post_create(author="alice", body="hello", dedupe="1:abc")
    again = board_post_create(author="alice", body="hello", dedupe="1:abc")
    other = board_post_create(author="alice", body="hello", dedupe="1:def")
    assert again.id == first.id
    assert other.id != first.id
    assert board_post_list(limit=10, offset=0).count == 2


def test_queue_publish__same_dedupe_appends_once():
    first = queue_publish(name="bees", body="hi", dedupe="1:abc")
    again = queue_publish(name="bees", body="hi", dedupe="1:abc")
    assert again == first
    assert redis_client().xlen("omk:queue:bees") == 1


def _lose_committed_keys() -> None:
    # As if the first attempt's transaction (key row included) never committed.
    IdempotencyRecord.objects.all().delete()


def test_board_api__retry_after_uncommitted_key_posts_once(api_client):
    headers = {"HTTP_IDEMPOTENCY_KEY": "post-1"}
    first = api_client.post("/api/board/", {"body": "once"}, content_type="application/json", **headers)
    _lose_committed_keys()
    retry = api_client.post("/api/board/", {"body": "once"}, content_type="application/json", **headers)
    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry.json()["id"] == first.json()["id"]
    assert api_client.get("/api/board/").json()["count"] == 1


def test_queue_api__retry_after_uncommitted_key_publishes_once(api_client, user):
    from hive.services import bee_queue_create

    bee_queue_create(owner=user, name="bees")
    headers = {"HTTP_IDEMPOTENCY_KEY": "msg-1"}
    first = api_client.post("/api/queues/bees/", {"body": "once"}, content_type="application/json", **headers)
    _lose_committed_keys()
    retry = api_client.post("/api/queues/bees/", {"body": "once"}, content_type="application/json", **headers)
    assert (first.status_code, retry.status_code) == (201, 201)
    assert retry.json()["id"] == first.json()["id"]
    assert redis_client().xlen("omk:queue:bees") == 1


def test_queue_api__retry_of_an_ack_whose_reply_was_lost_answers_acked(api_client, user):
    """The ack reached Redis, its answer never reached the bee (a failover, a dead instance):
    the retry with the same key says acked, so the bee does not count the message as lost."""
    from hive.services import bee_queue_create

    bee_queue_create(owner=user, name="bees")
    message = api_client.post("/api/queues/bees/", {"body": "m"}, content_type="application/json").json()["id"]
    api_client.post("/api/queues/bees/claim", {"consumer": "c"}, content_type="application/json")
    headers = {"HTTP_IDEMPOTENCY_KEY": "ack-1"}
    payload = {"ids": [message], "consumer": "c"}
    first = api_client.post("/api/queues/bees/ack", payload, content_type="application/json", **headers)
    _lose_committed_keys()
    retry = api_client.post("/api/queues/bees/ack", payload, content_type="application/json", **headers)
    assert (first.status_code, retry.status_code) == (200, 200)
    assert first.json() == retry.json() == {"acked": [message], "not_pending": []}

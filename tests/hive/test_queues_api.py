"""Bee message queues and bee decisions over the API."""

import time

import pytest
from django.test import Client

from core.redis import redis_client
from lifecycle.outbox.models import OutboxEvent
from lifecycle.queues.services import queue_grouped_names

pytestmark = pytest.mark.django_db


def _json(client, url, payload):
    return client.post(url, payload, content_type="application/json")


@pytest.fixture(autouse=True)
def owned(user):
    """The queues these tests use, owned by `user` (api_client's user)."""
    from hive.services import bee_queue_create

    for name in ("scouts", "q"):
        bee_queue_create(owner=user, name=name)


def test_queue_api__publish_claim_ack(api_client):
    published = [_json(api_client, "/api/queues/scouts/", {"body": f"flowers {n}"}) for n in range(3)]
    assert [r.status_code for r in published] == [201, 201, 201]
    ids = [r.json()["id"] for r in published]
    claimed = _json(api_client, "/api/queues/scouts/claim", {"consumer": "bee-1", "count": 10}).json()["messages"]
    assert [m["id"] for m in claimed] == ids
    assert [m["body"] for m in claimed] == ["flowers 0", "flowers 1", "flowers 2"]
    assert _json(api_client, "/api/queues/scouts/claim", {"consumer": "bee-2", "count": 10}).json() == {"messages": []}
    ack = _json(api_client, "/api/queues/scouts/ack", {"ids": ids, "consumer": "bee-1"}).json()
    assert ack == {"acked": ids, "not_pending": []}
    again = _json(api_client, "/api/queues/scouts/ack", {"ids": ids, "consumer": "bee-1"}).json()
    assert again == {"acked": [], "not_pending": ids}


def test_queue_api__unacked_message_goes_to_another_consumer_after_visibility_timeout(api_client, settings):
    settings.QUEUES_VISIBILITY_TIMEOUT_SECONDS = 1.0
    message_id = _json(api_client, "/api/queues/scouts/", {"body": "x"}).json()["id"]
    _json(api_client, "/api/queues/scouts/claim", {"consumer": "gone"})
    assert _json(api_client, "/api/queues/scouts/claim", {"consumer": "other"}).json()["messages"] == []
    time.sleep(1.1)
    messages = _json(api_client, "/api/queues/scouts/claim", {"consumer": "other"}).json()["messages"]
    assert [(m["id"], m["redelivered"]) for m in messages] == [(message_id, True)]


def test_queue_api__messages_expire_after_retention(api_client, settings):
    settings.QUEUES_RETENTION_SECONDS = 0.3
    _json(api_client, "/api/queues/scouts/", {"body": "old"})
    time.sleep(0.5)
    assert _json(api_client, "/api/queues/scouts/claim", {"consumer": "c"}).json()["messages"] == []
    assert redis_client().xlen("omk:queue:scouts") == 0


@pytest.mark.parametrize("name", ["bad%20name", "bad:name", "bad*", "-x", "x" * 65, "%C3%BC"])
def test_queue_api__bad_queue_name_is_422_naming_it(api_client, name):
    response = _json(api_client, f"/api/queues/{name}/", {"body": "x"})
    assert response.status_code == 422, response.content
    assert "name" in response.json()["fields"]
    assert redis_client().keys("omk:queue:*") == []


@pytest.mark.parametrize(
    ("url", "payload", "field"),
    [
        ("/api/queues/q/", {"body": ""}, "body"),
        ("/api/queues/q/", {}, "body"),
        ("/api/queues/q/claim", {"consumer": "bad consumer"}, "consumer"),
        ("/api/queues/q/claim", {"consumer": "c", "count": 0}, "count"),
        ("/api/queues/q/claim", {"consumer": "c", "count": 1000}, "count"),
        ("/api/queues/q/claim", {"consumer": "c", "block_ms": 60000}, "block_ms"),
        ("/api/queues/q/claim", {"consumer": "c", "count": "2"}, "count"),
        ("/api/queues/q/claim", {"consumer": "c", "block_ms": False}, "block_ms"),
        ("/api/queues/q/ack", {"ids": [], "consumer": "c"}, "ids"),
        ("/api/queues/q/ack", {"ids": ["not-an-id"], "consumer": "c"}, "ids"),
        ("/api/queues/q/ack", {"ids": ["1-0"]}, "consumer"),
    ],
)
def test_queue_api__bad_input_is_422_naming_the_field(api_client, url, payload, field):
    response = _json(api_client, url, payload)
    assert response.status_code == 422, response.content
    assert field in response.json()["fields"]


def test_queue_api__oversized_message_is_413(api_client):
    assert _json(api_client, "/api/queues/q/", {"body": "x" * (64 * 1024 + 1)}).status_code == 413
    assert redis_client().keys("omk:queue:*") == []


def test_queue_api__requires_authentication(client):
    assert _json(client, "/api/queues/q/", {"body": "x"}).status_code == 401


@pytest.mark.django_db(transaction=True)
def test_bee_decision_api__recorded_as_analytics_event(api_client, user):
    response = _json(api_client, "/api/bees/scout-7/decisions/", {"decision": "forage", "context": {"field": "clover"}})
    assert response.status_code == 202
    event = OutboxEvent.objects.get(kind="bee_decision")
    assert str(event.id) == response.json()["event_id"]
    assert event.payload["bee"] == "scout-7"
    assert event.payload["decision"] == "forage"
    assert event.payload["context"] == {"field": "clover"}
    assert event.payload["user_id"] == user.pk


@pytest.mark.parametrize(
    ("bee", "payload", "field"),
    [
        ("scout", {"decision": ""}, "decision"),
        ("scout", {"context": {}}, "decision"),
        ("bad:bee", {"decision": "x"}, "bee"),
        ("scout", {"decision": "x", "context": [1]}, "context"),
    ],
)
def test_bee_decision_api__bad_input_is_422(api_client, bee, payload, field):
    response = _json(api_client, f"/api/bees/{bee}/decisions/", payload)
    assert response.status_code == 422, response.content
    assert field in response.json()["fields"]
    assert OutboxEvent.objects.count() == 0


def test_bee_decision_api__nan_in_context_is_422(api_client):
    response = api_client.post(
        "/api/bees/scout/decisions/", '{"decision": "x", "context": {"v": NaN}}', content_type="application/json"
    )
    assert response.status_code == 422, response.content
    assert OutboxEvent.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_queue_api__retried_publish_with_idempotency_key_publishes_once(api_client):
    headers = {"Idempotency-Key": "publish-1"}
    first = api_client.post("/api/queues/q/", {"body": "x"}, content_type="application/json", headers=headers)
    again = api_client.post("/api/queues/q/", {"body": "x"}, content_type="application/json", headers=headers)
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert redis_client().xlen("omk:queue:q") == 1


def test_queue_api__ack_of_ids_beyond_redis_range_is_422(api_client):
    response = _json(api_client, "/api/queues/q/ack", {"ids": ["99999999999999999999-0"], "consumer": "c"})
    assert response.status_code == 422
    assert "ids" in response.json()["fields"]


def test_bee_decision_api__nul_in_context_is_422(api_client):
    response = _json(api_client, "/api/bees/scout/decisions/", {"decision": "x", "context": {"v": "a\x00"}})
    assert response.status_code == 422
    assert "context" in response.json()["fields"]
    assert OutboxEvent.objects.count() == 0


# --- owners and members --------------------------------------------------------------------------


def _queue_keys() -> list[bytes]:
    return sorted(redis_client().keys("omk:queue:*"))


def test_queue_create__owner_and_members(api_client, other_client, other_user):
    created = _json(api_client, "/api/queues/", {"name": "pollen", "members": ["bob"]})
    assert created.status_code == 201, created.content
    assert {k: v for k, v in created.json().items() if k != "created_at"} == {
        "name": "pollen",
        "owner": "alice",
        "members": ["bob"],
    }
    assert [q["name"] for q in other_client.get("/api/queues/").json()] == ["pollen"]
    # A member publishes, the owner claims and acks.
    message = _json(other_client, "/api/queues/pollen/", {"body": "for alice"}).json()["id"]
    claimed = _json(api_client, "/api/queues/pollen/claim", {"consumer": "a-1"}).json()["messages"]
    assert [m["id"] for m in claimed] == [message]
    assert _json(api_client, "/api/queues/pollen/ack", {"ids": [message], "consumer": "a-1"}).json()["acked"] == [
        message
    ]


def test_queue__anyone_else_gets_404_and_reads_nothing(api_client, other_client):
    message = _json(api_client, "/api/queues/scouts/", {"body": "a secret payload"}).json()["id"]
    keys = _queue_keys()
    for url, payload in (
        ("/api/queues/scouts/", {"body": "x"}),
        ("/api/queues/scouts/claim", {"consumer": "thief"}),
        ("/api/queues/scouts/ack", {"ids": [message], "consumer": "thief"}),
    ):
        response = _json(other_client, url, payload)
        assert response.status_code == 404, (url, response.content)
        assert response.json()["detail"] == "No queue named scouts."
    assert other_client.get("/api/queues/").json() == []
    assert _queue_keys() == keys
    # The owner's bee still gets the message.
    claimed = _json(api_client, "/api/queues/scouts/claim", {"consumer": "bee"}).json()["messages"]
    assert [m["body"] for m in claimed] == ["a secret payload"]


def test_queue__unknown_names_are_404_and_create_nothing_in_redis(api_client):
    for n in range(5):
        assert _json(api_client, f"/api/queues/made-up-{n}/claim", {"consumer": "c"}).status_code == 404
        assert _json(api_client, f"/api/queues/made-up-{n}/", {"body": "x"}).status_code == 404
    assert _queue_keys() == []


def test_queue_create__taken_name_unknown_member_and_limit(api_client, settings, user):
    assert _json(api_client, "/api/queues/", {"name": "scouts"}).json()["error"] == "queue_exists"
    unknown = _json(api_client, "/api/queues/", {"name": "new", "members": ["nobody"]})
    assert unknown.status_code == 422
    assert "nobody" in unknown.json()["fields"]["members"][0]
    bad = _json(api_client, "/api/queues/", {"name": "bad:name"})
    assert bad.status_code == 422
    settings.HIVE_MAX_QUEUES_PER_USER = 2  # owns scouts and q already
    limited = _json(api_client, "/api/queues/", {"name": "third"})
    assert (limited.status_code, limited.json()["error"]) == (409, "queue_limit")


def test_queue_ack__only_the_consumer_holding_the_message(api_client):
    message = _json(api_client, "/api/queues/q/", {"body": "x"}).json()["id"]
    _json(api_client, "/api/queues/q/claim", {"consumer": "holder"})
    other = _json(api_client, "/api/queues/q/ack", {"ids": [message], "consumer": "someone-else"}).json()
    assert other == {"acked": [], "not_pending": [message]}
    assert _json(api_client, "/api/queues/q/ack", {"ids": [message], "consumer": "holder"}).json()["acked"] == [message]


def test_queue__every_key_it_creates_expires(api_client):
    headers = {"Idempotency-Key": "k1"}
    api_client.post("/api/queues/q/", {"body": "x"}, content_type="application/json", headers=headers)
    _json(api_client, "/api/queues/scouts/claim", {"consumer": "c"})  # creates the stream and group
    message = _json(api_client, "/api/queues/scouts/", {"body": "y"}).json()["id"]
    _json(api_client, "/api/queues/scouts/claim", {"consumer": "c"})
    _json(api_client, "/api/queues/scouts/ack", {"ids": [message], "consumer": "c"})
    keys = _queue_keys()
    # Two streams, the keyed publish's dedupe mark, the other publish's own sent mark, the ack's
    # own result mark and the index of grouped streams the claim added scouts to; then the
    # index's mark, once a recovery pass read it.
    assert len(keys) == 6
    queue_grouped_names()
    keys = _queue_keys()
    assert len(keys) == 7
    assert all(redis_client().pttl(key) > 0 for key in keys), [(k, redis_client().pttl(k)) for k in keys]


def test_queue__backlog_cap_refuses_with_429_and_trims_nothing(api_client, settings):
    settings.HIVE_QUEUE_MAX_LENGTH = 3
    ids = [_json(api_client, "/api/queues/q/", {"body": str(n)}).json()["id"] for n in range(3)]
    full = _json(api_client, "/api/queues/q/", {"body": "one too many"})
    assert full.status_code == 429
    assert full.json()["error"] == "queue_full"
    assert full["Retry-After"]
    claimed = _json(api_client, "/api/queues/q/claim", {"consumer": "c", "count": 10}).json()["messages"]
    assert [m["id"] for m in claimed] == ids  # nothing was trimmed to make room
    _json(api_client, "/api/queues/q/ack", {"ids": ids[:1], "consumer": "c"})
    assert _json(api_client, "/api/queues/q/", {"body": "room again"}).status_code == 201


def test_queue__idle_consumers_holding_nothing_are_removed(api_client):
    from lifecycle.queues.services import queue_remove_idle_consumers

    _json(api_client, "/api/queues/q/", {"body": "held"})
    done = _json(api_client, "/api/queues/q/", {"body": "done"}).json()["id"]
    _json(api_client, "/api/queues/q/claim", {"consumer": "holder"})
    _json(api_client, "/api/queues/q/claim", {"consumer": "idle"})
    _json(api_client, "/api/queues/q/ack", {"ids": [done], "consumer": "idle"})
    assert queue_remove_idle_consumers(idle_seconds=3600) == 0  # not idle long enough
    assert queue_remove_idle_consumers(idle_seconds=0) == 1
    assert [c["name"] for c in redis_client().xinfo_consumers("omk:queue:q", "bees")] == [b"holder"]


def test_queue__admin_deletes_the_queue_and_its_messages(api_client, django_user_model):
    from django.urls import reverse

    from hive.models import BeeQueue

    _json(api_client, "/api/queues/q/", {"body": "x"})
    admin = Client()
    admin.force_login(django_user_model.objects.create_superuser(username="root", password="pw-root-1"))
    queue = BeeQueue.objects.get(name="q")
    assert admin.get(reverse("admin:hive_beequeue_changelist")).status_code == 200
    admin.post(reverse("admin:hive_beequeue_delete", args=[queue.pk]), {"post": "yes"})
    assert not BeeQueue.objects.filter(name="q").exists()
    assert redis_client().exists("omk:queue:q") == 0

"""Bee message queues and bee decisions over the API."""

import time

import pytest

from core.redis import redis_client
from lifecycle.outbox.models import OutboxEvent

pytestmark = pytest.mark.django_db


def _json(client, url, payload):
    return client.post(url, payload, content_type="application/json")


def test_queue_api__publish_claim_ack(api_client):
    published = [_json(api_client, "/api/queues/scouts/", {"body": f"flowers {n}"}) for n in range(3)]
    assert [r.status_code for r in published] == [201, 201, 201]
    ids = [r.json()["id"] for r in published]
    claimed = _json(api_client, "/api/queues/scouts/claim", {"consumer": "bee-1", "count": 10}).json()["messages"]
    assert [m["id"] for m in claimed] == ids
    assert [m["body"] for m in claimed] == ["flowers 0", "flowers 1", "flowers 2"]
    assert _json(api_client, "/api/queues/scouts/claim", {"consumer": "bee-2", "count": 10}).json() == {"messages": []}
    ack = _json(api_client, "/api/queues/scouts/ack", {"ids": ids}).json()
    assert ack == {"acked": ids, "not_pending": []}
    again = _json(api_client, "/api/queues/scouts/ack", {"ids": ids}).json()
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
        ("/api/queues/q/ack", {"ids": []}, "ids"),
        ("/api/queues/q/ack", {"ids": ["not-an-id"]}, "ids"),
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
    response = _json(api_client, "/api/queues/q/ack", {"ids": ["99999999999999999999-0"]})
    assert response.status_code == 422
    assert "ids" in response.json()["fields"]


def test_bee_decision_api__nul_in_context_is_422(api_client):
    response = _json(api_client, "/api/bees/scout/decisions/", {"decision": "x", "context": {"v": "a\x00"}})
    assert response.status_code == 422
    assert "context" in response.json()["fields"]
    assert OutboxEvent.objects.count() == 0

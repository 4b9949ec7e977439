"""Conversations: durable turns with gap-free seq, outbox events, hot history and its recovery."""

import threading
import uuid

import pytest
from django.db import connection, transaction
from procrastinate.contrib.django.models import ProcrastinateJob

from core.redis import redis_client
from hive import history
from hive.llm import local_reply
from hive.models import Conversation, Reply, Turn
from hive.services import turn_append
from lifecycle.outbox.models import OutboxEvent

# Turns reach the hot history on commit: these tests commit for real.
pytestmark = pytest.mark.django_db(transaction=True)


def _create(client) -> str:
    response = client.post("/api/conversations/", {}, content_type="application/json")
    assert response.status_code == 201, response.content
    return response.json()["id"]


def _turn(client, conversation_id, role="user", content="hello"):
    return client.post(
        f"/api/conversations/{conversation_id}/turns/",
        {"role": role, "content": content},
        content_type="application/json",
    )


def test_conversation_api__create_append_read(api_client, run_replies):
    conversation_id = _create(api_client)
    created = _turn(api_client, conversation_id, "user", "Who rules the hive?").json()
    assert created["seq"] == 1
    assert (created["turn"]["role"], created["turn"]["content"]) == ("user", "Who rules the hive?")
    assert (created["reply"]["status"], created["reply"]["answers_seq"]) == ("pending", 1)
    assert api_client.get(f"/api/conversations/{conversation_id}/").json()["replies"][0]["id"] == created["reply"]["id"]
    assert run_replies() == ["done"]
    response = api_client.get(f"/api/conversations/{conversation_id}/")
    assert response.status_code == 200
    body = response.json()
    assert body["id"] == conversation_id
    assert [(t["seq"], t["role"]) for t in body["turns"]] == [(1, "user"), (2, "assistant")]
    assert body["turns"][1]["content"] == local_reply(body["turns"][:1])
    assert body["replies"] == []
    assert all(t["created_at"] for t in body["turns"])


def test_conversation_api__clients_cannot_post_assistant_turns(api_client):
    conversation_id = _create(api_client)
    response = _turn(api_client, conversation_id, "assistant", "I am the Queen.")
    assert response.status_code == 422
    assert "role" in response.content.decode()
    assert Turn.objects.count() == 0
    assert not ProcrastinateJob.objects.filter(task_name="hive.generate_reply").exists()


def test_turn_append__commits_the_reply_job_in_its_transaction(user):
    conversation = Conversation.objects.create(owner=user)
    jobs_inside = []

    def fail_after_append() -> None:
        with transaction.atomic():
            turn_append(conversation_id=conversation.id, user=user, role="user", content="lost")
            jobs_inside.append(ProcrastinateJob.objects.filter(task_name="hive.generate_reply").count())
            raise RuntimeError("the request failed after the append")

    with pytest.raises(RuntimeError):
        fail_after_append()
    assert jobs_inside == [1]
    # The job rolled back with the turn: no job for a turn that does not exist.
    assert not ProcrastinateJob.objects.filter(task_name="hive.generate_reply").exists()
    assert Reply.objects.count() == 0
    turn = turn_append(conversation_id=conversation.id, user=user, role="user", content="kept")
    job = ProcrastinateJob.objects.get(task_name="hive.generate_reply")
    assert job.args == {"reply_id": turn.reply.pk}
    assert Reply.objects.get().job_id == job.id


def test_conversation_api__each_turn_has_its_analytics_event(api_client, user, run_replies):
    conversation_id = _create(api_client)
    _turn(api_client, conversation_id, "user", "one")
    run_replies()
    events = OutboxEvent.objects.filter(kind="llm_conversation").order_by("payload__seq")
    assert [(e.payload["seq"], e.payload["role"]) for e in events] == [(1, "user"), (2, "assistant")]
    assert events[1].payload["content"] == Turn.objects.get(seq=2).content
    assert {e.payload["conversation_id"] for e in events} == {conversation_id}
    assert {e.payload["user_id"] for e in events} == {user.pk}


def test_turn_append__rolled_back_with_its_event_and_seq(user):
    conversation = Conversation.objects.create(owner=user)

    def fail_after_append() -> None:
        with transaction.atomic():
            turn_append(conversation_id=conversation.id, user=user, role="user", content="lost")
            raise RuntimeError("the request failed after the append")

    with pytest.raises(RuntimeError):
        fail_after_append()
    assert Turn.objects.count() == 0
    assert OutboxEvent.objects.count() == 0
    # The counter rolled back too: the next turn is 1, not 2 (no gap).
    assert turn_append(conversation_id=conversation.id, user=user, role="user", content="kept").seq == 1


def test_conversation_api__another_users_conversation_is_404(api_client, other_client):
    conversation_id = _create(api_client)
    _turn(api_client, conversation_id)
    assert other_client.get(f"/api/conversations/{conversation_id}/").status_code == 404
    response = _turn(other_client, conversation_id, content="intrusion")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"
    assert list(Turn.objects.values_list("content", flat=True)) == ["hello"]
    assert other_client.get(f"/api/conversations/{uuid.uuid4()}/").status_code == 404


def test_conversation_api__requires_authentication(client, api_client):
    conversation_id = _create(api_client)
    assert client.get(f"/api/conversations/{conversation_id}/").status_code == 401
    assert client.post("/api/conversations/", {}, content_type="application/json").status_code == 401


@pytest.mark.parametrize(
    ("payload", "field"),
    [
        ({"role": "user", "content": ""}, "content"),
        ({"role": "user", "content": "   "}, "content"),
        ({"role": "queen", "content": "hi"}, "role"),
        ({"content": "hi"}, "role"),
        ({"role": "user"}, "content"),
    ],
)
def test_conversation_api__bad_turn_is_422_naming_the_field(api_client, payload, field):
    conversation_id = _create(api_client)
    response = api_client.post(f"/api/conversations/{conversation_id}/turns/", payload, content_type="application/json")
    assert response.status_code == 422, response.content
    assert field in response.json()["fields"]
    assert Turn.objects.count() == 0
    assert Conversation.objects.get().last_seq == 0


def test_conversation_api__empty_and_oversized_bodies_are_refused(api_client):
    conversation_id = _create(api_client)
    url = f"/api/conversations/{conversation_id}/turns/"
    assert api_client.post(url, "", content_type="application/json").status_code in (400, 422)
    huge = {"role": "user", "content": "x" * (64 * 1024 + 1)}
    assert api_client.post(url, huge, content_type="application/json").status_code == 413
    assert Turn.objects.count() == 0


def test_conversation_read__served_from_the_hot_history(api_client):
    conversation_id = _create(api_client)
    _turn(api_client, conversation_id, content="original")
    # Changed behind the service's back in PostgreSQL only: a read from Redis still says "original".
    Turn.objects.update(content="changed in postgres")
    turns = api_client.get(f"/api/conversations/{conversation_id}/").json()["turns"]
    assert [t["content"] for t in turns] == ["original"]


def test_conversation_read__redis_flushed_rebuilds_from_postgres(api_client, recovered):
    conversation_id = _create(api_client)
    for n in range(5):
        _turn(api_client, conversation_id, content=f"turn {n}")
    before = recovered("missing")
    redis_client().flushdb()
    turns = api_client.get(f"/api/conversations/{conversation_id}/").json()["turns"]
    assert [t["content"] for t in turns] == [f"turn {n}" for n in range(5)]
    assert [t["seq"] for t in turns] == [1, 2, 3, 4, 5]
    assert recovered("missing") == (before[0] + 1, before[1] + 1)
    # Rebuilt: the next read is served from Redis again and counts nothing.
    assert set(history.history_read(uuid.UUID(conversation_id))) == {1, 2, 3, 4, 5}
    api_client.get(f"/api/conversations/{conversation_id}/")
    assert recovered("missing") == (before[0] + 1, before[1] + 1)
    # And the conversation goes on after the loss.
    assert _turn(api_client, conversation_id, content="after").json()["seq"] == 6
    assert len(api_client.get(f"/api/conversations/{conversation_id}/").json()["turns"]) == 6


def test_conversation_read__partial_hot_history_is_completed(api_client, recovered):
    conversation_id = _create(api_client)
    for n in range(4):
        _turn(api_client, conversation_id, content=f"turn {n}")
    key = history._key(uuid.UUID(conversation_id))
    redis_client().zremrangebyscore(key, 2, 2)
    before = recovered("incomplete")
    turns = api_client.get(f"/api/conversations/{conversation_id}/").json()["turns"]
    assert [t["seq"] for t in turns] == [1, 2, 3, 4]
    assert recovered("incomplete") == (before[0] + 1, before[1] + 1)


def test_conversation_read__lost_history_is_not_half_restored_by_a_new_turn(api_client):
    conversation_id = _create(api_client)
    _turn(api_client, conversation_id, content="first")
    redis_client().flushdb()
    _turn(api_client, conversation_id, content="second")
    turns = api_client.get(f"/api/conversations/{conversation_id}/").json()["turns"]
    assert [t["content"] for t in turns] == ["first", "second"]


def test_conversation__hot_history_has_a_one_hour_ttl(api_client):
    conversation_id = _create(api_client)
    _turn(api_client, conversation_id)
    key = history._key(uuid.UUID(conversation_id))
    redis_client().expire(key, 60)
    api_client.get(f"/api/conversations/{conversation_id}/")
    assert 3590 <= redis_client().ttl(key) <= 3600


def test_turn_append__concurrent_threads_get_gap_free_seqs(user):
    conversation = Conversation.objects.create(owner=user)
    errors = []

    def append(n: int) -> None:
        try:
            for i in range(10):
                turn_append(conversation_id=conversation.id, user=user, role="user", content=f"{n}-{i}")
        except Exception as exc:  # reported below; a thread's exception would otherwise vanish
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=append, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(Turn.objects.values_list("seq", flat=True)) == list(range(1, 41))
    conversation.refresh_from_db()
    assert conversation.last_seq == 40


def test_conversation_api__retried_turn_with_idempotency_key_is_appended_once(api_client):
    conversation_id = _create(api_client)
    url = f"/api/conversations/{conversation_id}/turns/"
    payload = {"role": "user", "content": "once"}
    first = api_client.post(url, payload, content_type="application/json", headers={"Idempotency-Key": "turn-1"})
    again = api_client.post(url, payload, content_type="application/json", headers={"Idempotency-Key": "turn-1"})
    assert first.status_code == again.status_code == 201
    assert first.json() == again.json()
    assert first.json()["seq"] == 1
    assert Turn.objects.count() == 1
    # One reply queued, not two.
    assert Reply.objects.count() == ProcrastinateJob.objects.filter(task_name="hive.generate_reply").count() == 1
    assert OutboxEvent.objects.filter(kind="llm_conversation").count() == 1
    assert len(api_client.get(f"/api/conversations/{conversation_id}/").json()["turns"]) == 1


@pytest.mark.parametrize("body", ["[]", "null", '"text"', '{"title": "\\u0000"}'])
def test_conversation_api__create_needs_a_json_object(api_client, body):
    response = api_client.post("/api/conversations/", body, content_type="application/json")
    assert response.status_code == 422, response.content
    assert set(response.json()["fields"]) <= {"body", "title"}
    assert Conversation.objects.count() == 0


def test_conversation_api__nul_in_content_is_422(api_client):
    conversation_id = _create(api_client)
    response = _turn(api_client, conversation_id, content="a\x00b")
    assert response.status_code == 422
    assert "content" in response.json()["fields"]
    assert Turn.objects.count() == 0

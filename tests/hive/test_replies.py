"""The Queen's replies: queued with the user turn, appended once by the job, retried, failed
visibly and retried by the user, read from PostgreSQL when Redis lost the history."""

import pytest
from django.db import IntegrityError, transaction

from core.redis import redis_client
from hive.llm import local_reply
from hive.models import Conversation, Reply, Turn
from hive.services import reply_complete, turn_append
from hive.tasks import RetryReply, generate_reply
from lifecycle.outbox.models import OutboxEvent

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def conversation(user):
    return Conversation.objects.create(owner=user)


def test_generate_reply__a_retried_job_finds_the_reply_there(conversation, user):
    turn = turn_append(conversation_id=conversation.id, user=user, role="user", content="Hello Queen")
    assert generate_reply(reply_id=turn.reply.pk) == "done"
    # The job runs again (its worker died after the commit, before procrastinate noted it).
    assert generate_reply(reply_id=turn.reply.pk) == "not pending"
    reply = Reply.objects.get()
    assert (reply.status, reply.turn.answers_id) == ("done", turn.pk)
    assert list(Turn.objects.values_list("seq", "role")) == [(1, "user"), (2, "assistant")]
    assert OutboxEvent.objects.filter(kind="llm_conversation", payload__role="assistant").count() == 1


def test_reply_complete__second_append_for_one_turn_is_refused(conversation, user):
    turn = turn_append(conversation_id=conversation.id, user=user, role="user", content="Hello")
    assert reply_complete(reply_id=turn.reply.pk, content="first")[1] is True
    assert reply_complete(reply_id=turn.reply.pk, content="second")[1] is False
    # Past the service's check, the constraint keyed by the answered turn refuses a second one.
    with pytest.raises(IntegrityError), transaction.atomic():
        Turn.objects.create(conversation=conversation, seq=9, role="assistant", content="again", answers=turn)
    assert Turn.objects.filter(role="assistant").count() == 1


def test_generate_reply__history_from_postgres_when_redis_lost_it(conversation, user):
    first = turn_append(conversation_id=conversation.id, user=user, role="user", content="one")
    generate_reply(reply_id=first.reply.pk)
    second = turn_append(conversation_id=conversation.id, user=user, role="user", content="two")
    redis_client().flushdb()
    assert generate_reply(reply_id=second.reply.pk) == "done"
    turns = list(Turn.objects.order_by("seq").values("seq", "role", "content"))
    assert [t["role"] for t in turns] == ["user", "assistant", "user", "assistant"]
    assert turns[3]["content"] == local_reply(turns[:3])


def test_generate_reply__failed_calls_are_retried_then_stored_as_failed(conversation, user, settings, api_client):
    settings.QUEEN_LLM_BACKEND = "tests.support.llm.FailingBackend"
    settings.QUEEN_MAX_ATTEMPTS = 3
    turn = turn_append(conversation_id=conversation.id, user=user, role="user", content="Hello")
    for attempt in (1, 2):
        with pytest.raises(RetryReply) as raised:
            generate_reply(reply_id=turn.reply.pk)
        assert raised.value.retry_in == pytest.approx(settings.QUEEN_BACKOFF_SECONDS * 2 ** (attempt - 1))
        assert Reply.objects.get().attempts == attempt
    assert generate_reply(reply_id=turn.reply.pk) == "failed"
    reply = Reply.objects.get()
    assert (reply.status, reply.attempts, reply.error) == ("failed", 3, "the model is unavailable")
    # Visible, never silently missing: the conversation shows it, and the user retries it.
    url = f"/api/conversations/{conversation.id}/"
    assert api_client.get(url).json()["replies"] == [
        {"id": reply.pk, "status": "failed", "answers_seq": 1, "seq": None, "attempts": 3, "error": reply.error}
    ]
    settings.QUEEN_LLM_BACKEND = "hive.llm.LocalBackend"
    retried = api_client.post(f"{url}replies/{reply.pk}/retry")
    assert (retried.status_code, retried.json()["status"]) == (202, "pending")
    assert api_client.post(f"{url}replies/{reply.pk}/retry").status_code == 409
    assert generate_reply(reply_id=reply.pk) == "done"
    assert api_client.get(url).json()["replies"] == []
    assert [t["role"] for t in api_client.get(url).json()["turns"]] == ["user", "assistant"]


def test_reply_retry_page__queues_a_failed_reply_again(conversation, user, settings, web_client, run_replies):
    settings.QUEEN_LLM_BACKEND = "tests.support.llm.FailingBackend"
    settings.QUEEN_MAX_ATTEMPTS = 1
    turn = turn_append(conversation_id=conversation.id, user=user, role="user", content="Hello")
    assert run_replies() == ["failed"]
    page = web_client.get(f"/hive/conversations/{conversation.id}/").content
    assert b"could not answer turn 1" in page
    settings.QUEEN_LLM_BACKEND = "hive.llm.LocalBackend"
    response = web_client.post(f"/hive/conversations/{conversation.id}/replies/{turn.reply.pk}/retry/")
    assert response.status_code == 302
    assert run_replies() == ["done"]
    assert Reply.objects.get().status == "done"


def test_generate_reply__counts_generated_retried_failed_and_the_time(conversation, user, settings):
    from prometheus_client import REGISTRY

    def sample(name: str) -> float:
        return REGISTRY.get_sample_value(name) or 0.0

    before = {
        n: sample(n)
        for n in (
            "hive_replies_generated_total",
            "hive_replies_retried_total",
            "hive_replies_failed_total",
            "hive_reply_generation_seconds_count",
        )
    }
    ok = turn_append(conversation_id=conversation.id, user=user, role="user", content="one")
    generate_reply(reply_id=ok.reply.pk)
    settings.QUEEN_LLM_BACKEND = "tests.support.llm.FailingBackend"
    settings.QUEEN_MAX_ATTEMPTS = 2
    bad = turn_append(conversation_id=conversation.id, user=user, role="user", content="two")
    with pytest.raises(RetryReply):
        generate_reply(reply_id=bad.reply.pk)
    generate_reply(reply_id=bad.reply.pk)
    after = {n: sample(n) - before[n] for n in before}
    assert after == {
        "hive_replies_generated_total": 1,
        "hive_replies_retried_total": 1,
        "hive_replies_failed_total": 1,
        "hive_reply_generation_seconds_count": 1,
    }

"""GET .../turns/?after=&wait=: the turns after a seq, waiting (bounded) until there are some."""

import threading
import time

import pytest
from django.db import close_old_connections

from hive.models import Conversation
from hive.services import turn_append
from hive.tasks import generate_reply

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def conversation(user):
    return Conversation.objects.create(owner=user)


def _url(conversation, **query) -> str:
    params = "&".join(f"{k}={v}" for k, v in query.items())
    return f"/api/conversations/{conversation.id}/turns/?{params}"


def _later(seconds: float, func) -> threading.Thread:
    def run() -> None:
        time.sleep(seconds)
        try:
            func()
        finally:
            close_old_connections()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_turns_after__woken_by_the_reply(api_client, conversation, user):
    turn = turn_append(conversation_id=conversation.id, user=user, role="user", content="Hello")
    replier = _later(0.5, lambda: generate_reply(reply_id=turn.reply.pk))
    started = time.monotonic()
    response = api_client.get(_url(conversation, after=1, wait=20))
    waited = time.monotonic() - started
    replier.join()
    assert response.status_code == 200
    body = response.json()
    assert [(t["seq"], t["role"]) for t in body["turns"]] == [(2, "assistant")]
    assert body["last_seq"] == 2
    assert body["replies"] == []
    # Woken by the notification, not by the 5 s re-check nor the 20 s bound.
    assert 0.4 < waited < 3


def test_turns_after__without_new_turns_waits_the_bound(api_client, conversation, user):
    turn_append(conversation_id=conversation.id, user=user, role="user", content="Hello")
    started = time.monotonic()
    body = api_client.get(_url(conversation, after=1, wait=1)).json()
    assert 1 <= time.monotonic() - started < 3
    assert body["turns"] == []
    assert [r["status"] for r in body["replies"]] == ["pending"]
    assert [t["seq"] for t in api_client.get(_url(conversation, after=0)).json()["turns"]] == [1]


def test_turns_after__past_the_waiters_cap_answers_at_once(api_client, conversation, settings):
    settings.QUEEN_MAX_WAITERS_PER_PROCESS = 0
    started = time.monotonic()
    assert api_client.get(_url(conversation, after=0, wait=10)).status_code == 200
    assert time.monotonic() - started < 1


def test_turns_after__wait_is_bounded_and_another_users_is_404(api_client, other_client, conversation):
    response = api_client.get(_url(conversation, after=0, wait=26))
    assert response.status_code == 422
    assert "wait" in response.content.decode()
    assert other_client.get(_url(conversation, after=0)).status_code == 404

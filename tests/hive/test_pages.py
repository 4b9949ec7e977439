"""The conversation web pages: turns and a form to add one, owner only."""

import pytest

from hive.models import Conversation, Turn
from hive.services import conversation_create, turn_append

pytestmark = pytest.mark.django_db(transaction=True)


def test_conversation_page__lists_turns_and_adds_one(web_client, user, run_replies):
    conversation = conversation_create(owner=user, title="Nectar plans")
    turn_append(conversation_id=conversation.id, user=user, role="user", content="Where is the clover?")
    response = web_client.get(f"/hive/conversations/{conversation.id}/")
    assert response.status_code == 200
    assert b"Nectar plans" in response.content
    assert b"Where is the clover?" in response.content
    response = web_client.post(f"/hive/conversations/{conversation.id}/", {"content": "And the lavender?"})
    assert response.status_code == 302
    page = web_client.get(f"/hive/conversations/{conversation.id}/").content
    assert b"And the lavender?" in page
    # Pending replies: the page says so and refreshes itself without JavaScript.
    assert b"The Queen is answering turn 2" in page
    assert b'http-equiv="refresh"' in page
    assert list(Turn.objects.order_by("seq").values_list("seq", "role")) == [(1, "user"), (2, "user")]
    assert run_replies() == ["done", "done"]
    page = web_client.get(f"/hive/conversations/{conversation.id}/").content
    assert b"The Queen answers turn 1" in page
    assert b"The Queen answers turn 2" in page
    assert b'http-equiv="refresh"' not in page


def test_conversation_page__bad_turn_is_422_and_writes_nothing(web_client, user):
    conversation = conversation_create(owner=user)
    response = web_client.post(f"/hive/conversations/{conversation.id}/", {"content": ""})
    assert response.status_code == 422
    assert b"content" in response.content
    assert Turn.objects.count() == 0


def test_conversation_page__another_users_conversation_is_404(web_client, other_user):
    conversation = conversation_create(owner=other_user)
    assert web_client.get(f"/hive/conversations/{conversation.id}/").status_code == 404
    assert (
        web_client.post(f"/hive/conversations/{conversation.id}/", {"role": "user", "content": "x"}).status_code == 404
    )
    assert Turn.objects.count() == 0


def test_conversation_list_page__starts_a_conversation(web_client, user):
    response = web_client.post("/hive/conversations/", {"title": "Swarm"})
    conversation = Conversation.objects.get(owner=user)
    assert response.status_code == 302
    assert response["Location"] == f"/hive/conversations/{conversation.id}/"
    assert b"Swarm" in web_client.get("/hive/conversations/").content


def test_hive_pages__require_login(client):
    response = client.get("/hive/board/")
    assert response.status_code == 302
    assert "login" in response["Location"]

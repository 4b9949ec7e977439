"""Two real gunicorn instances: conversations and sessions continue across them, even after a
SIGKILL, and concurrent appends through both keep every turn with gap-free seqs."""

from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from hive.models import Turn
from lifecycle.outbox.models import OutboxEvent

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]


def _login(base_url: str) -> requests.Session:
    session = requests.Session()
    response = session.post(f"{base_url}/api/auth/login", json={"username": "alice", "password": "alice-password-1"})
    assert response.status_code == 200, response.text
    session.headers["X-CSRFToken"] = response.json()["csrf_token"]
    session.headers["Referer"] = base_url + "/"
    return session


def test_instances__conversation_and_session_continue_after_sigkill(start_instance, user):
    a = start_instance()
    b = start_instance()
    session = _login(a.url)
    conversation_id = session.post(f"{a.url}/api/conversations/", json={"title": "across"}).json()["id"]
    assert (
        session.post(
            f"{a.url}/api/conversations/{conversation_id}/turns/", json={"role": "user", "content": "hi"}
        ).json()["seq"]
        == 1
    )
    a.kill()

    # The same cookie jar (user session) against instance B: still logged in, same conversation.
    session.headers["Referer"] = b.url + "/"
    assert session.get(f"{b.url}/api/auth/me").json()["username"] == "alice"
    turns = session.get(f"{b.url}/api/conversations/{conversation_id}/").json()["turns"]
    assert [(t["seq"], t["content"]) for t in turns] == [(1, "hi")]
    response = session.post(
        f"{b.url}/api/conversations/{conversation_id}/turns/", json={"role": "user", "content": "hello"}
    )
    assert response.json()["seq"] == 2
    turns = session.get(f"{b.url}/api/conversations/{conversation_id}/").json()["turns"]
    assert [t["content"] for t in turns] == ["hi", "hello"]


def test_instances__200_concurrent_turns_through_two_instances_are_all_kept(start_instance, api_token):
    a = start_instance()
    b = start_instance()
    headers = {"Authorization": f"Bearer {api_token}"}
    conversation_id = requests.post(f"{a.url}/api/conversations/", json={}, headers=headers).json()["id"]

    def append(n: int) -> int:
        base = a.url if n % 2 else b.url
        response = requests.post(
            f"{base}/api/conversations/{conversation_id}/turns/",
            json={"role": "user", "content": f"turn {n}"},
            headers=headers,
            timeout=30,
        )
        assert response.status_code == 201, response.text
        return response.json()["seq"]

    with ThreadPoolExecutor(max_workers=8) as pool:
        seqs = list(pool.map(append, range(200)))

    assert sorted(seqs) == list(range(1, 201))
    turns = requests.get(f"{b.url}/api/conversations/{conversation_id}/", headers=headers).json()["turns"]
    assert [t["seq"] for t in turns] == list(range(1, 201))
    assert sorted(t["content"] for t in turns) == sorted(f"turn {n}" for n in range(200))
    assert Turn.objects.count() == 200
    assert OutboxEvent.objects.filter(kind="llm_conversation").count() == 200


def test_instances__redis_down_turns_stay_durable_and_queues_answer_503(start_instance, user, api_token):
    from hive.services import bee_queue_create, conversation_create, turn_append
    from tests.support.instances import free_port

    bee_queue_create(owner=user, name="q")
    conversation = conversation_create(owner=user)
    turn_append(conversation_id=conversation.id, user=user, role="user", content="before the outage")
    instance = start_instance(REDIS_URL=f"redis://127.0.0.1:{free_port()}/0")
    headers = {"Authorization": f"Bearer {api_token}"}
    url = f"{instance.url}/api/conversations/{conversation.id}/"

    # PostgreSQL holds every turn: reads and appends go on without Redis.
    assert requests.get(url, headers=headers).json()["turns"][0]["content"] == "before the outage"
    response = requests.post(url + "turns/", json={"role": "user", "content": "during"}, headers=headers)
    assert response.status_code == 201
    assert [t["seq"] for t in requests.get(url, headers=headers).json()["turns"]] == [1, 2]

    # Queues live only in Redis: a clear 503 with Retry-After, not a 500.
    response = requests.post(f"{instance.url}/api/queues/q/", json={"body": "x"}, headers=headers)
    assert response.status_code == 503
    assert response.headers["Retry-After"]

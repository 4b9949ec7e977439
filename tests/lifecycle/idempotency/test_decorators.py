import threading
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.contrib.auth.models import Group
from django.db import connection
from django.test import Client

from lifecycle.idempotency.models import IdempotencyRecord

pytestmark = pytest.mark.urls("tests.support.idempotency_urls")


def _post(client: Client, path: str, body: dict, key: str | None):
    headers = {"Idempotency-Key": key} if key else {}
    return client.post(path, body, content_type="application/json", headers=headers)


@pytest.mark.django_db
@pytest.mark.parametrize(
    "path",
    [
        "/api/groups/",  # the retried view refuses by itself (the group exists): rolled back, replayed
        "/api/groups-unchecked/",  # it creates a second group: only the key's INSERT stops it
    ],
)
def test_idempotent__same_key_same_body_replays_first_response(api_client, path):
    first = _post(api_client, path, {"name": "bees"}, "key-1")
    second = _post(api_client, path, {"name": "bees"}, "key-1")
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json()
    assert second["Idempotent-Replayed"] == "true"
    assert Group.objects.filter(name__startswith="bees").count() == 1
    assert IdempotencyRecord.objects.get().response_status == 201


@pytest.mark.django_db
def test_idempotent__key_order_and_spacing_of_the_body_do_not_matter(api_client):
    api_client.post(
        "/api/groups/", '{"name": "x", "delay": 0}', content_type="application/json", headers={"Idempotency-Key": "k"}
    )
    again = api_client.post(
        "/api/groups/", '{"delay":0,"name":"x"}', content_type="application/json", headers={"Idempotency-Key": "k"}
    )
    assert again.status_code == 201
    assert again["Idempotent-Replayed"] == "true"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "second_path",
    [
        "/api/groups/",  # the second request would succeed: rolled back at the key's INSERT
        "/api/groups-failing/",  # it fails by itself (409): the reused key is still what is reported
    ],
)
def test_idempotent__same_key_different_body_is_422(api_client, second_path):
    assert _post(api_client, "/api/groups/", {"name": "a"}, "key-2").status_code == 201
    response = _post(api_client, second_path, {"name": "b"}, "key-2")
    assert response.status_code == 422
    assert response.json()["error"] == "idempotency_key_reused"
    assert "Idempotency-Key" in response.json()["fields"]
    assert not Group.objects.filter(name="b").exists()


@pytest.mark.django_db
def test_idempotent__keys_are_per_user(api_client, staff_client):
    assert _post(api_client, "/api/groups/", {"name": "a"}, "shared").status_code == 201
    # Another user's identical key is a different key: it runs (and conflicts on the name).
    assert _post(staff_client, "/api/groups/", {"name": "a"}, "shared").status_code == 409


@pytest.mark.django_db
def test_idempotent__without_key_no_record(api_client):
    assert _post(api_client, "/api/groups/", {"name": "a"}, None).status_code == 201
    assert IdempotencyRecord.objects.count() == 0


@pytest.mark.django_db(transaction=True)
def test_idempotent__a_transaction_only_with_a_key(api_client):
    assert _post(api_client, "/api/atomicity/", {"name": "a"}, "key-t").json() == {"in_atomic_block": True}
    # Without a key, the view's services keep their own transactions: no BEGIN/COMMIT around them.
    assert _post(api_client, "/api/atomicity/", {"name": "a"}, None).json() == {"in_atomic_block": False}


@pytest.mark.django_db
def test_idempotent__error_rolls_back_the_write_and_the_key(api_client):
    response = _post(api_client, "/api/groups-failing/", {"name": "half"}, "key-3")
    assert response.status_code == 409
    assert not Group.objects.filter(name="half").exists()
    assert not IdempotencyRecord.objects.exists()


@pytest.mark.django_db
def test_idempotent__bad_key_is_422_naming_the_header(api_client):
    response = _post(api_client, "/api/groups/", {"name": "a"}, "has space")
    assert response.status_code == 422
    assert "Idempotency-Key" in response.json()["fields"]
    assert not Group.objects.exists()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    "path",
    [
        # The twins' own INSERT of the group name waits for the first COMMIT, then fails.
        "/api/groups/",
        # The twins create groups of their own; the key's INSERT is what waits, then finds the row.
        "/api/groups-unchecked/",
    ],
)
def test_idempotent__concurrent_same_key_one_effect(api_token, path):
    """8 threads (8 connections) send one key at once while the first holds its transaction."""
    start = threading.Barrier(8)

    def send(i: int):
        client = Client(headers={"Authorization": f"Bearer {api_token}"})
        start.wait()
        try:
            return _post(client, path, {"name": "race", "delay": 0.3}, "race-key")
        finally:
            connection.close()

    with ThreadPoolExecutor(8) as pool:
        responses = list(pool.map(send, range(8)))
    assert [r.status_code for r in responses] == [201] * 8
    assert len({r.json()["id"] for r in responses}) == 1
    assert Group.objects.filter(name__startswith="race").count() == 1
    assert sum(r.get("Idempotent-Replayed") == "true" for r in responses) == 7


def test_idempotent__async_view_is_refused_at_import():
    from lifecycle.idempotency.decorators import idempotent

    async def view(request):
        return None

    with pytest.raises(TypeError, match="sync views only"):
        idempotent(view)

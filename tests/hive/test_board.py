"""The hive board: posts in Redis that expire, listed newest first without dangling entries."""

import time

import pytest

from core.redis import redis_client
from hive.selectors import board_post_list
from hive.services import board_index_key, board_post_create, board_post_key

pytestmark = pytest.mark.django_db


def _post(client, body):
    return client.post("/api/board/", {"body": body}, content_type="application/json")


def test_board_api__post_and_list_newest_first_paginated(api_client):
    ids = []
    for n in range(5):
        response = _post(api_client, f"post {n}")
        assert response.status_code == 201
        ids.append(response.json()["id"])
    first = api_client.get("/api/board/?limit=2").json()
    assert [p["body"] for p in first["items"]] == ["post 4", "post 3"]
    assert first["count"] == 5
    assert first["next_offset"] == 2
    assert first["items"][0]["author"] == "alice"
    last = api_client.get("/api/board/?limit=2&offset=4").json()
    assert [p["body"] for p in last["items"]] == ["post 0"]
    assert last["next_offset"] is None


def test_board__posts_live_seven_days_by_default():
    post = board_post_create(author="alice", body="hello")
    ttl = redis_client().ttl(board_post_key(post.id))
    assert 7 * 86400 - 10 <= ttl <= 7 * 86400


def test_board__expired_posts_leave_no_index_entries(settings):
    settings.HIVE_BOARD_TTL_SECONDS = 1.0
    board_post_create(author="alice", body="short-lived")
    board_post_create(author="alice", body="also short-lived")
    assert len(board_post_list().items) == 2
    time.sleep(1.2)
    settings.HIVE_BOARD_TTL_SECONDS = 60
    kept = board_post_create(author="alice", body="fresh")
    page = board_post_list()
    assert [p.id for p in page.items] == [kept.id]
    assert page.count == 1
    assert redis_client().zcard(board_index_key()) == 1


def test_board__a_post_gone_early_is_dropped_and_the_page_refilled():
    posts = [board_post_create(author="alice", body=f"p{n}") for n in range(4)]
    redis_client().delete(board_post_key(posts[3].id), board_post_key(posts[2].id))
    page = board_post_list(limit=2)
    assert {p.id for p in page.items} == {posts[1].id, posts[0].id}
    assert redis_client().zcard(board_index_key()) == 2


@pytest.mark.parametrize("payload", [{"body": ""}, {"body": "   "}, {}])
def test_board_api__empty_body_is_422(api_client, payload):
    response = api_client.post("/api/board/", payload, content_type="application/json")
    assert response.status_code == 422
    assert "body" in response.json()["fields"]
    assert redis_client().zcard(board_index_key()) == 0


def test_board_api__oversized_body_is_413(api_client):
    assert _post(api_client, "x" * (64 * 1024 + 1)).status_code == 413
    assert redis_client().zcard(board_index_key()) == 0


def test_board_api__bad_pagination_is_422(api_client):
    assert api_client.get("/api/board/?limit=0").status_code == 422
    assert api_client.get("/api/board/?offset=-1").status_code == 422


def test_board_page__shows_posts_and_accepts_new_ones(web_client):
    board_post_create(author="bob", body="buzz from bob")
    response = web_client.get("/hive/board/")
    assert response.status_code == 200
    assert b"buzz from bob" in response.content
    response = web_client.post("/hive/board/", {"body": "buzz from alice"})
    assert response.status_code == 302
    assert b"buzz from alice" in web_client.get("/hive/board/").content


def test_board_post__per_user_hourly_limit_is_429_with_retry_after(api_client, other_client, settings):
    settings.HIVE_BOARD_MAX_POSTS_PER_HOUR = 2
    assert [_post(api_client, f"p{n}").status_code for n in range(2)] == [201, 201]
    refused = _post(api_client, "one too many")
    assert refused.status_code == 429
    assert refused.json()["error"] == "throttled"
    assert 0 < int(refused["Retry-After"]) <= 3600
    assert _post(other_client, "another user's first").status_code == 201
    assert api_client.get("/api/board/").json()["count"] == 3

"""The conventional vote bench/votes.py compares ours with: a real request, so the bench cannot rot."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.contrib.sessions.backends.cache import SessionStore
from django.test import Client
from django.urls import reverse
from django.utils import timezone
from django.utils.crypto import get_random_string

from governance import services
from governance.models import Vote
from lifecycle.idempotency.models import IdempotencyRecord
from lifecycle.outbox.models import OutboxEvent
from tests.support.tokens import funded_stake


@pytest.fixture(autouse=True)
def _bench_urls(settings) -> None:
    settings.ROOT_URLCONF = "bench.urls"


@pytest.fixture
def proposals(staff_user) -> list[int]:
    now = timezone.now()
    created = []
    for title in ("first", "second"):
        proposal = services.proposal_create(
            proposer=staff_user,
            title=title,
            voting_starts_at=now - timedelta(minutes=1),
            voting_ends_at=now + timedelta(days=1),
            quorum=Decimal(1),
        )
        created.append(services.proposal_open(actor=staff_user, proposal_id=proposal.pk).pk)
    return created


@pytest.fixture
def browser(user) -> tuple[Client, str]:
    """A logged-in browser-like client (session cookie, CSRF cookie), as bench/votes.py sends."""
    funded_stake(user, Decimal("10"), lock_days=30)
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    token = get_random_string(32)
    client.cookies["csrftoken"] = token
    return client, token


def _vote(client: Client, token: str, proposal_id: int, key: str, **headers):
    return client.post(
        reverse("bench-conventional-vote", args=[proposal_id]),
        {"choice": "for"},
        content_type="application/json",
        headers={"X-CSRFToken": token, "Idempotency-Key": key, **headers},
    )


def test_conventional_vote__201_then_409_for_a_second_vote(proposals, browser, user, monkeypatch):
    client, token = browser
    saves = []
    monkeypatch.setattr(SessionStore, "save", lambda self, *a, **k: saves.append(type(self)))

    first = _vote(client, token, proposals[0], "key-1")
    second = _vote(client, token, proposals[0], "key-2")

    assert first.status_code == 201, first.content
    assert first.json()["weight"] == "10.00000000"
    assert second.status_code == 409
    assert second.json()["error"] == "already_voted"
    vote = Vote.objects.get()
    assert (vote.proposal_id, vote.voter_id, vote.choice) == (proposals[0], user.pk, "for")
    [event] = OutboxEvent.objects.filter(payload__action="vote_cast").values_list("payload", flat=True)
    assert event == {
        "action": "vote_cast",
        "proposal_id": proposals[0],
        "voter_id": user.pk,
        "choice": "for",
        "vote_id": vote.pk,
        "weight": "10.00000000",
    }
    record = IdempotencyRecord.objects.get()
    assert (record.key, record.response_status, record.response_body) == ("key-1", 201, first.content.decode())
    # Each request's session was Django's stock cache store, saved on the way out.
    assert saves == [SessionStore, SessionStore]


def test_conventional_vote__same_key_replays_and_csrf_is_checked(proposals, browser):
    client, token = browser

    first = _vote(client, token, proposals[1], "key-1")
    replay = _vote(client, token, proposals[1], "key-1")
    without_csrf = _vote(client, "", proposals[0], "key-2")

    assert first.status_code == replay.status_code == 201
    assert replay.content == first.content
    assert replay["Idempotent-Replayed"] == "true"
    assert without_csrf.status_code == 403
    assert Vote.objects.count() == 1

"""The vote's single statement keeps the locking contract with close: a close waits for the votes
in flight and counts them; a vote that waited for a close counts nowhere and is refused."""

import threading
from decimal import Decimal

import pytest
from django.db import connection, transaction

from core.errors import Conflict
from governance import services
from governance.models import Proposal, Vote
from lifecycle.outbox.models import OutboxEvent

pytestmark = pytest.mark.django_db(transaction=True)


def _in_thread(target, results: dict, name: str) -> threading.Thread:
    def run():
        try:
            results[name] = target()
        except Exception as exc:  # handed to the test thread, which asserts on it
            results[name] = exc
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def test_close__waits_for_a_vote_in_flight_and_counts_it(open_proposal, staff_user, staked_user):
    voted, release, results = threading.Event(), threading.Event(), {}

    def vote_and_hold():
        with transaction.atomic():
            vote = services.vote_cast(voter=staked_user, proposal_id=open_proposal.pk, choice="for")
            voted.set()
            release.wait(10)  # the vote is acknowledged to nobody yet: its transaction is open
            return vote

    voter = _in_thread(vote_and_hold, results, "vote")
    assert voted.wait(10)
    closer = _in_thread(
        lambda: services.proposal_close(actor=staff_user, proposal_id=open_proposal.pk), results, "close"
    )
    closer.join(1.0)
    assert closer.is_alive(), "close must wait for the vote holding the proposal FOR KEY SHARE"
    release.set()
    voter.join(10)
    closer.join(10)
    assert isinstance(results["vote"], Vote)
    assert results["close"].tally_for == Decimal("25.5")


def test_vote__waiting_on_a_closing_proposal_is_refused_and_not_written(open_proposal, staff_user, staked_user):
    locked, release, results = threading.Event(), threading.Event(), {}

    def close_slowly():
        with transaction.atomic():
            Proposal.objects.select_for_update().get(pk=open_proposal.pk)
            locked.set()
            release.wait(10)
            return services.proposal_close(actor=staff_user, proposal_id=open_proposal.pk)

    closer = _in_thread(close_slowly, results, "close")
    assert locked.wait(10)
    voter = _in_thread(
        lambda: services.vote_cast(voter=staked_user, proposal_id=open_proposal.pk, choice="for"), results, "vote"
    )
    voter.join(1.0)
    assert voter.is_alive(), "the vote must wait for the close's FOR UPDATE"
    release.set()
    closer.join(10)
    voter.join(10)
    assert results["close"].tally_for == Decimal(0)
    assert isinstance(results["vote"], Conflict)
    assert results["vote"].code == "proposal_not_open"
    assert not Vote.objects.exists()
    assert [
        e.payload["action"]
        for e in OutboxEvent.objects.filter(kind="governance_event").exclude(payload__action="purchase_confirmed")
    ] == ["proposal_closed"]

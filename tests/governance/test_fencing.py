"""Fencing at the data: the proposal row keeps the highest lock fence it accepted and refuses a
write carrying an older one (invariant 3: executed at most once, even by a holder paused past
its lease)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import pytest

from core.errors import Conflict
from core.redis import redis_client
from governance import services
from governance.models import Proposal
from lifecycle.locks import distributed_lock
from lifecycle.locks.lock import _Keys
from tests.support.tokens import funded_stake

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def passed_proposal(open_proposal, staff_user, staked_user):
    services.vote_cast(voter=staked_user, proposal_id=open_proposal.pk, choice="for")
    funded_stake(staff_user, Decimal("10"), lock_days=5)
    services.vote_cast(voter=staff_user, proposal_id=open_proposal.pk, choice="for")
    return services.proposal_close(actor=staff_user, proposal_id=open_proposal.pk)


def lock_fence_counter(proposal_id: int) -> int:
    return int(redis_client().get(_Keys(services.proposal_lock_name(proposal_id), "-").fence) or 0)


@pytest.mark.django_db
def test_proposal_execute__stale_fence_refused_even_while_status_allows_it(passed_proposal, staff_user):
    Proposal.objects.filter(pk=passed_proposal.pk).update(last_fence=7)  # a newer holder wrote with 7
    for stale in (5, 7):
        with pytest.raises(Conflict) as err:
            services.proposal_execute(actor=staff_user, proposal_id=passed_proposal.pk, fence=stale)
        assert err.value.code == "stale_fence"
    row = Proposal.objects.get(pk=passed_proposal.pk)
    assert (row.status, row.executed_at, row.last_fence) == ("closed", None, 7)
    executed = services.proposal_execute(actor=staff_user, proposal_id=passed_proposal.pk, fence=8)
    assert (executed.status, executed.last_fence) == ("executed", 8)


@pytest.mark.django_db
def test_proposal_close__stale_fence_refused_and_nothing_written(open_proposal, staff_user):
    Proposal.objects.filter(pk=open_proposal.pk).update(last_fence=7)
    with pytest.raises(Conflict) as err:
        services.proposal_close(actor=staff_user, proposal_id=open_proposal.pk, fence=6)
    assert err.value.code == "stale_fence"
    row = Proposal.objects.get(pk=open_proposal.pk)
    assert (row.status, row.closed_at, row.last_fence) == ("open", None, 7)
    closed = services.proposal_close(actor=staff_user, proposal_id=open_proposal.pk, fence=9)
    assert (closed.status, Proposal.objects.get(pk=open_proposal.pk).last_fence) == ("closed", 9)


@pytest.mark.django_db
def test_proposal_close__refused_for_status_keeps_the_old_fence(passed_proposal, staff_user):
    Proposal.objects.filter(pk=passed_proposal.pk).update(last_fence=3)
    with pytest.raises(Conflict) as err:
        services.proposal_close(actor=staff_user, proposal_id=passed_proposal.pk, fence=4)
    assert err.value.code == "proposal_closed"
    assert Proposal.objects.get(pk=passed_proposal.pk).last_fence == 3  # rolled back with the refusal


@pytest.mark.django_db
def test_exclusive_services__record_the_proposal_locks_fences(open_proposal, staff_user, staked_user):
    services.vote_cast(voter=staked_user, proposal_id=open_proposal.pk, choice="for")
    services.proposal_close_exclusive(actor=staff_user, proposal_id=open_proposal.pk)
    closed_fence = Proposal.objects.get(pk=open_proposal.pk).last_fence
    assert closed_fence == lock_fence_counter(open_proposal.pk) >= 1
    services.proposal_execute_exclusive(actor=staff_user, proposal_id=open_proposal.pk)
    row = Proposal.objects.get(pk=open_proposal.pk)
    assert row.status == "executed"
    assert row.last_fence == lock_fence_counter(open_proposal.pk) > closed_fence


@pytest.mark.django_db
def test_api__close_waits_for_governance_voting_and_answers_409_when_busy(open_proposal, staff_client, settings):
    settings.LOCKS_TIMEOUT = 0.2
    with distributed_lock.acquire("governance_voting"):
        response = staff_client.post(f"/api/proposals/{open_proposal.pk}/close/", content_type="application/json")
    assert response.status_code == 409, response.content
    assert response.json()["error"] == "proposal_busy"
    assert Proposal.objects.get(pk=open_proposal.pk).status == "open"
    response = staff_client.post(f"/api/proposals/{open_proposal.pk}/close/", content_type="application/json")
    assert response.status_code == 200, response.content


@pytest.mark.django_db
def test_api__execute_while_the_proposal_lock_is_held_is_409(passed_proposal, staff_client, settings):
    settings.LOCKS_TIMEOUT = 0.2
    with distributed_lock.acquire(services.proposal_lock_name(passed_proposal.pk)):
        response = staff_client.post(f"/api/proposals/{passed_proposal.pk}/execute/", content_type="application/json")
    assert response.status_code == 409
    assert response.json()["error"] == "proposal_busy"
    assert Proposal.objects.get(pk=passed_proposal.pk).status == "closed"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_stale_holder__paused_process_cannot_execute_after_a_newer_holder(passed_proposal, staff_user, service_env):
    """A (a real process) takes proposal:<pk> and is SIGSTOPped past its TTL; B takes the lock and
    executes; A resumes and tries: the row refuses A's fence, and A's release leaves B's lock alone."""
    pk = passed_proposal.pk
    a = subprocess.Popen(
        [sys.executable, "-m", "tests.governance.fence_worker", str(pk), staff_user.username, "0.5"],
        cwd=ROOT,
        env={**os.environ, **service_env, "PYTHONPATH": str(ROOT)},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )

    def read() -> dict:
        while True:
            line = a.stdout.readline()
            assert line, a.stderr.read()
            if line.startswith("{"):
                return json.loads(line)

    try:
        a_fence = read()["fence"]
        os.kill(a.pid, signal.SIGSTOP)
        with distributed_lock.acquire(services.proposal_lock_name(pk), ttl=30, timeout=5) as b:
            assert b.fence > a_fence
            services.proposal_execute(actor=staff_user, proposal_id=pk, fence=b.fence)
            executed_at = Proposal.objects.get(pk=pk).executed_at
            os.kill(a.pid, signal.SIGCONT)
            a.stdin.write("go\n")
            a.stdin.flush()
            result = read()
            assert a.wait(timeout=20) == 0
            assert result["write"] == "stale_fence"
            assert result["release"].startswith("LockLost")
            assert redis_client().get(_Keys(services.proposal_lock_name(pk), "-").lock).decode() == b.token
        row = Proposal.objects.get(pk=pk)
        assert (row.status, row.executed_at, row.last_fence) == ("executed", executed_at, b.fence)
    finally:
        if a.poll() is None:
            os.kill(a.pid, signal.SIGCONT)
            a.kill()
            a.wait()

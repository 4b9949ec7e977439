from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.utils import timezone

from core.errors import Conflict, Forbidden, InvalidInput, NotFound
from governance import services
from governance.models import Proposal, Purchase, Sale, Vote
from tests.governance.conftest import WALLET, unlock
from tests.support.tokens import funded_stake

pytestmark = pytest.mark.django_db


def test_proposal_create__non_staff_is_forbidden(user):
    now = timezone.now()
    with pytest.raises(Forbidden):
        services.proposal_create(
            proposer=user, title="x", voting_starts_at=now, voting_ends_at=now + timedelta(1), quorum=Decimal(0)
        )
    assert not Proposal.objects.exists()


def test_proposal_create__window_must_end_after_start(staff_user):
    now = timezone.now()
    with pytest.raises(InvalidInput) as err:
        services.proposal_create(
            proposer=staff_user, title="x", voting_starts_at=now, voting_ends_at=now, quorum=Decimal(0)
        )
    assert "voting_ends_at" in err.value.fields


def test_proposal_create__naive_window_is_read_as_utc(staff_user):
    starts = datetime(2030, 1, 1, 12, 0)
    proposal = services.proposal_create(
        proposer=staff_user, title="x", voting_starts_at=starts, voting_ends_at=starts + timedelta(1), quorum=Decimal(0)
    )
    proposal.refresh_from_db()
    assert proposal.voting_starts_at == datetime(2030, 1, 1, 12, 0, tzinfo=UTC)
    assert proposal.voting_ends_at == datetime(2030, 1, 2, 12, 0, tzinfo=UTC)


def test_vote_cast__weight_is_active_stake_at_voting_time(open_proposal, staked_user):
    funded_stake(staked_user, Decimal("4.5"), lock_days=10)
    vote = services.vote_cast(voter=staked_user, proposal_id=open_proposal.pk, choice="for")
    assert vote.weight == Decimal("30")
    # Staking more afterwards does not change a cast vote.
    funded_stake(staked_user, Decimal("100"), lock_days=10)
    vote.refresh_from_db()
    assert vote.weight == Decimal("30")


def test_vote_cast__unstaked_positions_do_not_count(open_proposal, user):
    stake = funded_stake(user, Decimal("5"), lock_days=1)
    unlock(stake)
    services.stake_unstake(owner=user, stake_id=stake.pk)
    with pytest.raises(Forbidden, match="no active stake"):
        services.vote_cast(voter=user, proposal_id=open_proposal.pk, choice="for")


def test_vote_cast__without_stake_is_forbidden(open_proposal, user):
    with pytest.raises(Forbidden) as err:
        services.vote_cast(voter=user, proposal_id=open_proposal.pk, choice="for")
    assert err.value.code == "no_stake"
    assert not Vote.objects.exists()


def test_vote_cast__second_vote_is_conflict(open_proposal, staked_user):
    services.vote_cast(voter=staked_user, proposal_id=open_proposal.pk, choice="for")
    with pytest.raises(Conflict) as err:
        services.vote_cast(voter=staked_user, proposal_id=open_proposal.pk, choice="against")
    assert err.value.code == "already_voted"
    assert Vote.objects.get().choice == "for"


def test_vote__database_refuses_a_second_vote_even_bypassing_services(open_proposal, staked_user):
    Vote.objects.create(proposal=open_proposal, voter=staked_user, choice="for", weight=1)
    with pytest.raises(IntegrityError), transaction.atomic():
        Vote.objects.create(proposal=open_proposal, voter=staked_user, choice="for", weight=1)


def test_vote_cast__only_while_open(staff_user, staked_user):
    now = timezone.now()
    draft = services.proposal_create(
        proposer=staff_user, title="d", voting_starts_at=now, voting_ends_at=now + timedelta(1), quorum=Decimal(0)
    )
    # A draft does not exist for a voter who is not staff; staff are told it is a draft.
    with pytest.raises(NotFound):
        services.vote_cast(voter=staked_user, proposal_id=draft.pk, choice="for")
    with pytest.raises(Conflict, match="draft"):
        services.vote_cast(voter=staff_user, proposal_id=draft.pk, choice="for")
    ended = services.proposal_create(
        proposer=staff_user,
        title="e",
        voting_starts_at=now - timedelta(2),
        voting_ends_at=now - timedelta(1),
        quorum=Decimal(0),
    )
    services.proposal_open(actor=staff_user, proposal_id=ended.pk)
    with pytest.raises(Conflict) as err:
        services.vote_cast(voter=staked_user, proposal_id=ended.pk, choice="for")
    assert err.value.code == "voting_ended"
    with pytest.raises(NotFound):
        services.vote_cast(voter=staked_user, proposal_id=999999, choice="for")


def test_close__tallies_and_decides(open_proposal, staff_user, staked_user, django_user_model):
    other = django_user_model.objects.create_user(username="bob", password="x")
    funded_stake(other, Decimal("3"), lock_days=5)
    services.vote_cast(voter=staked_user, proposal_id=open_proposal.pk, choice="for")
    services.vote_cast(voter=other, proposal_id=open_proposal.pk, choice="against")
    closed = services.proposal_close(actor=staff_user, proposal_id=open_proposal.pk)
    assert (closed.tally_for, closed.tally_against, closed.tally_abstain) == (Decimal("25.5"), Decimal(3), Decimal(0))
    assert closed.passed is True
    with pytest.raises(Conflict):
        services.proposal_close(actor=staff_user, proposal_id=open_proposal.pk)
    with pytest.raises(Conflict, match="closed"):
        services.vote_cast(voter=other, proposal_id=open_proposal.pk, choice="for")


def test_close__below_quorum_does_not_pass_and_cannot_execute(open_proposal, staff_user, user):
    funded_stake(user, Decimal("1"), lock_days=5)  # quorum is 10
    services.vote_cast(voter=user, proposal_id=open_proposal.pk, choice="for")
    closed = services.proposal_close(actor=staff_user, proposal_id=open_proposal.pk)
    assert closed.passed is False
    with pytest.raises(Conflict) as err:
        services.proposal_execute(actor=staff_user, proposal_id=open_proposal.pk)
    assert err.value.code == "proposal_not_passed"


def test_execute__once(open_proposal, staff_user, staked_user):
    services.vote_cast(voter=staked_user, proposal_id=open_proposal.pk, choice="for")
    services.proposal_close(actor=staff_user, proposal_id=open_proposal.pk)
    executed = services.proposal_execute(actor=staff_user, proposal_id=open_proposal.pk)
    assert executed.status == "executed"
    assert executed.executed_at is not None
    with pytest.raises(Conflict, match="executed"):
        services.proposal_execute(actor=staff_user, proposal_id=open_proposal.pk)


def test_execute__non_staff_forbidden(open_proposal, user):
    with pytest.raises(Forbidden):
        services.proposal_execute(actor=user, proposal_id=open_proposal.pk)


def test_purchase_create__tokens_are_amount_over_price_as_decimal(sale, user):
    purchase = services.purchase_create(buyer=user, sale_id=sale.pk, wallet=WALLET.lower(), amount=Decimal("1.1"))
    assert purchase.tokens == Decimal("2.2")
    assert purchase.wallet == WALLET  # stored checksummed
    sale.refresh_from_db()
    assert sale.sold == Decimal("2.2")


def test_purchase_create__per_buyer_cap(sale, user):
    services.purchase_create(buyer=user, sale_id=sale.pk, wallet=WALLET, amount=Decimal("14"))  # 28 tokens
    with pytest.raises(Conflict) as err:
        services.purchase_create(buyer=user, sale_id=sale.pk, wallet=WALLET, amount=Decimal("1.5"))  # 3 more
    assert err.value.code == "cap_reached"
    assert Purchase.objects.count() == 1


def test_purchase_create__never_oversold(sale, django_user_model):
    for i in range(3):
        buyer = django_user_model.objects.create_user(username=f"b{i}", password="x")
        services.purchase_create(buyer=buyer, sale_id=sale.pk, wallet=WALLET, amount=Decimal("15"))  # 30 each
    last = django_user_model.objects.create_user(username="last", password="x")
    with pytest.raises(Conflict) as err:
        services.purchase_create(buyer=last, sale_id=sale.pk, wallet=WALLET, amount=Decimal("6"))  # 12 > 10 left
    assert err.value.code == "sold_out"
    assert Sale.objects.get().sold == Decimal(90)


def test_sale__database_refuses_oversold(sale):
    with pytest.raises(IntegrityError), transaction.atomic():
        Sale.objects.filter(pk=sale.pk).update(sold=Decimal("100.00000001"))


def test_purchase_create__bad_wallet_names_the_field(sale, user):
    with pytest.raises(InvalidInput) as err:
        services.purchase_create(buyer=user, sale_id=sale.pk, wallet="0x1234", amount=Decimal(1))
    assert list(err.value.fields) == ["wallet"]
    assert not Purchase.objects.exists()


def test_purchase_create__outside_window_is_conflict(sale, user):
    Sale.objects.filter(pk=sale.pk).update(ends_at=timezone.now() - timedelta(seconds=1))
    with pytest.raises(Conflict) as err:
        services.purchase_create(buyer=user, sale_id=sale.pk, wallet=WALLET, amount=Decimal(1))
    assert err.value.code == "sale_ended"


def test_unstake__refused_while_locked_then_once(user):
    stake = funded_stake(user, Decimal("2"), lock_days=7)
    with pytest.raises(Conflict) as err:
        services.stake_unstake(owner=user, stake_id=stake.pk)
    assert err.value.code == "still_locked"
    unlock(stake)
    assert services.stake_unstake(owner=user, stake_id=stake.pk).status == "unstaked"
    with pytest.raises(Conflict) as err:
        services.stake_unstake(owner=user, stake_id=stake.pk)
    assert err.value.code == "already_unstaked"


def test_unstake__someone_elses_position_is_not_found(user, staff_user):
    stake = funded_stake(staff_user, Decimal("2"), lock_days=1)
    with pytest.raises(NotFound):
        services.stake_unstake(owner=user, stake_id=stake.pk)


def test_stake__lock_days_bounds(user):
    with pytest.raises(InvalidInput) as err:
        funded_stake(user, Decimal(1), lock_days=0)
    assert list(err.value.fields) == ["lock_days"]


def _governance_events() -> list[dict]:
    from lifecycle.outbox.models import OutboxEvent

    return list(
        OutboxEvent.objects.filter(kind="governance_event")
        # The tests' funding confirms purchases (tests/support/tokens.py): not what is tested here.
        .exclude(payload__action="purchase_confirmed")
        .order_by("created_at")
        .values_list("payload", flat=True)
    )


def test_vote_cast__writes_one_governance_event_with_the_vote(open_proposal, staked_user):
    vote = services.vote_cast(voter=staked_user, proposal_id=open_proposal.pk, choice="against")
    events = _governance_events()
    assert Decimal(events[0].pop("weight")) == Decimal("25.5")  # a string: decimals stay exact
    assert events == [
        {
            "action": "vote_cast",
            "proposal_id": open_proposal.pk,
            "voter_id": staked_user.pk,
            "choice": "against",
            "vote_id": vote.pk,
        }
    ]


def test_vote_cast__refused_vote_writes_no_event(open_proposal, staked_user, user):
    services.vote_cast(voter=staked_user, proposal_id=open_proposal.pk, choice="for")
    with pytest.raises(Conflict):
        services.vote_cast(voter=staked_user, proposal_id=open_proposal.pk, choice="for")
    with pytest.raises(NotFound):
        services.vote_cast(voter=staked_user, proposal_id=open_proposal.pk + 1000, choice="for")
    assert [e["action"] for e in _governance_events()] == ["vote_cast"]
    assert Vote.objects.count() == 1


def test_close_and_execute__write_governance_events(open_proposal, staff_user, staked_user):
    services.vote_cast(voter=staked_user, proposal_id=open_proposal.pk, choice="for")
    services.proposal_close(actor=staff_user, proposal_id=open_proposal.pk)
    services.proposal_execute(actor=staff_user, proposal_id=open_proposal.pk)
    events = _governance_events()
    assert [e["action"] for e in events] == ["vote_cast", "proposal_closed", "proposal_executed"]
    assert {k: Decimal(v) for k, v in events[1]["tally"].items()} == {"for": 25.5, "against": 0, "abstain": 0}
    assert events[1]["passed"] is True

"""The flows' checks against the real PostgreSQL: each one fails when the data is wrong.

A fake run (recorder and users only) stands in for a chaos run; the rows are written with the
services, then tampered with the way a bug would (a lost row, a write applied twice).
"""

from datetime import timedelta
from decimal import Decimal
from types import SimpleNamespace

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone

from chaos.flows.base import CheckResult, User
from chaos.flows.governance import LedgerFlow, ProposalFlow, PurchaseFlow, StakeFlow
from chaos.recorder import ACKED, REJECTED, Recorder
from governance import services
from governance.models import LedgerEntry, Proposal, Purchase, StakingPosition, TokenAccount
from tests.support.tokens import funded_stake


@pytest.fixture
def run(db):
    users = [User(name="chaos-voter", password="x"), User(name="chaos-other", password="x")]
    for user in users:
        get_user_model().objects.create_user(username=user.name, password="x")
    staff = User(name="chaos-staff", password="x", staff=True)
    get_user_model().objects.create_user(username=staff.name, password="x", is_staff=True)
    return SimpleNamespace(recorder=Recorder(), users=users, staff=[staff], platform=None)


def _acked(run, flow: str, kind: str, data: dict, body: dict, outcome: str = ACKED) -> None:
    op = run.recorder.new_op(flow, kind, data)
    op.outcome, op.body = outcome, body


def _owner(name: str):
    return get_user_model().objects.get(username=name)


def test_stake_check__clean_then_lost_then_duplicated(run):
    stake = funded_stake(_owner("chaos-voter"), Decimal("101"), lock_days=30)
    _acked(run, "stakes", "stake", {"user": "chaos-voter", "amount": "101"}, {"id": stake.pk})
    assert StakeFlow(run).check().violations == []

    # The same logical stake stored twice (a retried key applied twice).
    StakingPosition.objects.create(
        owner=stake.owner, amount=stake.amount, lock_days=30, started_at=stake.started_at, unlocks_at=stake.unlocks_at
    )
    assert StakeFlow(run).check().duplicated == 1

    LedgerEntry.objects.all().delete()
    StakingPosition.objects.all().delete()
    result = StakeFlow(run).check()
    assert result.lost == 1
    assert result.violations


def test_purchase_check__duplicate_and_half_written_refusal(run):
    sale = services.sale_create(
        actor=_owner("chaos-staff"),
        token_price=Decimal("0.5"),
        allocation=Decimal("1000"),
        per_buyer_cap=Decimal("500"),
        starts_at=timezone.now() - timedelta(minutes=1),
        ends_at=timezone.now() + timedelta(days=1),
    )
    wallet = "0x" + "ab" * 20
    purchase = services.purchase_create(
        buyer=_owner("chaos-voter"), sale_id=sale.pk, wallet=wallet, amount=Decimal("10")
    )
    flow = PurchaseFlow(run)
    flow.sales = [sale.pk]
    _acked(run, "purchases", "buy", {"wallet": wallet}, {"id": purchase.pk, "tokens": str(purchase.tokens)})
    assert flow.check().violations == []

    Purchase.objects.create(
        sale=sale,
        buyer=purchase.buyer,
        wallet=wallet,
        amount=purchase.amount,
        tokens=purchase.tokens,
        expires_at=purchase.expires_at,
    )
    assert flow.check().duplicated == 1

    refused = "0x" + "cd" * 20
    services.purchase_create(buyer=_owner("chaos-other"), sale_id=sale.pk, wallet=refused, amount=Decimal("10"))
    _acked(run, "purchases", "buy", {"wallet": refused}, {"error": "sold_out"}, outcome=REJECTED)
    assert any("refused" in v for v in flow.check().violations)


def test_proposal_check__two_acknowledged_executions_and_a_wrong_tally(run):
    staff = _owner("chaos-staff")
    proposal = services.proposal_create(
        proposer=staff,
        title="t",
        voting_starts_at=timezone.now() - timedelta(minutes=1),
        voting_ends_at=timezone.now() + timedelta(minutes=5),
        quorum=Decimal("1"),
    )
    services.proposal_open(actor=staff, proposal_id=proposal.pk)
    funded_stake(_owner("chaos-voter"), Decimal("100"), lock_days=30)
    vote = services.vote_cast(voter=_owner("chaos-voter"), proposal_id=proposal.pk, choice="for")
    services.proposal_close(actor=staff, proposal_id=proposal.pk)
    services.proposal_execute(actor=staff, proposal_id=proposal.pk)
    flow = ProposalFlow(run)
    flow.proposals = {proposal.pk: SimpleNamespace(id=proposal.pk)}
    _acked(run, "proposals", "vote", {"proposal": proposal.pk, "user": "chaos-voter"}, {"id": vote.pk})
    _acked(run, "proposals", "close", {"proposal": proposal.pk}, {"status": "closed"})
    _acked(run, "proposals", "execute", {"proposal": proposal.pk}, {"status": "executed"})
    assert flow.check().violations == []

    _acked(run, "proposals", "execute", {"proposal": proposal.pk}, {"status": "executed"})
    assert flow.check().double_executions == 1

    Proposal.objects.filter(pk=proposal.pk).update(tally_for=Decimal("1"))
    assert flow.check().details["tally_mismatches"] == 1


# The reply job closes its connection as a worker's task does: outside a test transaction.
@pytest.mark.django_db(transaction=True)
def test_conversation_reply_check__clean_then_missing_then_failed(run):
    from chaos.flows.hive import ConversationFlow
    from hive.models import Reply, Turn
    from hive.services import conversation_create, turn_append
    from hive.tasks import generate_reply

    owner = _owner("chaos-voter")
    conversation = conversation_create(owner=owner)
    turns = [turn_append(conversation_id=conversation.id, user=owner, role="user", content=f"turn-{n}") for n in (1, 2)]
    for turn in turns:
        _acked(run, "conversations", "turn", {"conversation": str(conversation.id), "content": turn.content,
                                               "user": owner.username}, {"seq": turn.seq})  # fmt: skip
    for turn in turns:
        generate_reply(reply_id=turn.reply.pk)
    clean = CheckResult()
    assert ConversationFlow(run).check_replies(clean) == {
        "replies_missing": 0,
        "replies_failed": 0,
        "replies_pending": 0,
    }
    assert clean.violations == []

    # A reply lost (the assistant turn gone), and one stored as failed.
    Reply.objects.filter(user_turn=turns[1]).update(status="failed", turn=None)
    Turn.objects.filter(answers=turns[1]).delete()
    checked = CheckResult()
    assert ConversationFlow(run).check_replies(checked) == {
        "replies_missing": 1,
        "replies_failed": 1,
        "replies_pending": 0,
    }
    assert checked.lost == 1
    assert "turn-2: no reply from the Queen (reply failed)" in checked.violations[0]


def test_ledger_check__negative_unbalanced_and_double_credit(run):
    funded_stake(_owner("chaos-voter"), Decimal("40"), lock_days=30)
    assert LedgerFlow(run).check().violations == []

    voter = _owner("chaos-voter")
    TokenAccount.objects.filter(user=voter).update(available=Decimal(5))
    assert any("the ledger sums to" in v for v in LedgerFlow(run).check().violations)

    # A second credit of one purchase (the unique constraint dropped, as a bug would).
    TokenAccount.objects.filter(user=voter).update(available=Decimal(0))
    credit = LedgerEntry.objects.get(user=voter, reason="purchase_confirmed")
    from django.db import connection

    with connection.cursor() as cursor:
        # A partial unique constraint is a unique index in PostgreSQL.
        cursor.execute("DROP INDEX ledger_one_credit_per_purchase")
    LedgerEntry.objects.create(user=voter, amount=credit.amount, reason="purchase_confirmed", purchase=credit.purchase)
    result = LedgerFlow(run).check()
    assert result.double_executions == 1
    assert any("credited 2 times" in v for v in result.violations)

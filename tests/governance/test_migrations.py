"""The token ledger's migration keeps the data recorded before it: purchases and stakes become
ledger entries, and stakes no paid token covered become void."""

from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import connection
from django.db.migrations.executor import MigrationExecutor
from django.db.models import Sum
from django.utils import timezone

BEFORE = [("governance", "0002_proposal_last_fence")]


@pytest.mark.django_db(transaction=True)
def test_migration__existing_purchases_and_stakes_become_ledger_entries():
    executor = MigrationExecutor(connection)
    executor.migrate(BEFORE)
    old = executor.loader.project_state(BEFORE).apps
    User, Sale = old.get_model("auth", "User"), old.get_model("governance", "Sale")
    Purchase, Stake = old.get_model("governance", "Purchase"), old.get_model("governance", "StakingPosition")
    t0 = timezone.now() - timedelta(days=30)
    buyer = User.objects.create(username="early-buyer")
    exploiter = User.objects.create(username="bought-nothing")
    sale = Sale.objects.create(
        token_price=1, allocation=1000, per_buyer_cap=1000, sold=150, starts_at=t0, ends_at=t0 + timedelta(days=60)
    )
    wallet = "0x" + "1" * 40
    paid = Purchase.objects.create(sale=sale, buyer=buyer, wallet=wallet, amount=100, tokens=100, status="confirmed")
    refunded = Purchase.objects.create(sale=sale, buyer=buyer, wallet=wallet, amount=50, tokens=50, status="refunded")
    Purchase.objects.filter(pk__in=[paid.pk, refunded.pk]).update(created_at=t0)

    def stake(owner, amount, day, *, unstaked_day=None):
        started = t0 + timedelta(days=day)
        return Stake.objects.create(
            owner=owner,
            amount=amount,
            lock_days=1,
            started_at=started,
            unlocks_at=started + timedelta(days=1),
            status="unstaked" if unstaked_day else "active",
            unstaked_at=t0 + timedelta(days=unstaked_day) if unstaked_day else None,
        )

    returned = stake(buyer, 80, 1, unstaked_day=3)  # 100 -> 20 -> back to 100
    backed = stake(buyer, 60, 4)  # 100 -> 40
    too_much = stake(buyer, 41, 5)  # only 40 left: void
    from_nothing = stake(exploiter, Decimal("99999999999999999999"), 2)

    executor = MigrationExecutor(connection)
    executor.migrate(executor.loader.graph.leaf_nodes())

    from governance.models import LedgerEntry, Purchase, StakingPosition, TokenAccount

    statuses = dict(StakingPosition.objects.values_list("pk", "status"))
    assert statuses == {returned.pk: "unstaked", backed.pk: "active", too_much.pk: "void", from_nothing.pk: "void"}
    assert TokenAccount.objects.get(user_id=buyer.pk).available == 40
    assert not TokenAccount.objects.filter(user_id=exploiter.pk, available__gt=0).exists()
    entries = list(LedgerEntry.objects.filter(user_id=buyer.pk).order_by("id").values_list("reason", "amount"))
    assert entries == [("purchase_confirmed", 100), ("stake", -80), ("unstake", 80), ("stake", -60)]
    assert LedgerEntry.objects.filter(user_id=buyer.pk).aggregate(total=Sum("amount"))["total"] == 40
    migrated = Purchase.objects.get(pk=paid.pk)
    assert (migrated.status, migrated.confirmed_at, migrated.payment_reference) == ("confirmed", t0, "")
    assert Purchase.objects.get(pk=refunded.pk).status == "refunded"
    # Void stakes give no voting weight.
    from django.contrib.auth import get_user_model

    from governance.selectors import active_stake_total

    assert active_stake_total(owner=get_user_model().objects.get(pk=exploiter.pk)) == 0

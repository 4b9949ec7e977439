"""The token ledger from the data recorded before it existed.

Purchases were recorded `confirmed` without any payment check. They are taken as paid (their
buyers acted in good faith; staff reconcile them against the processor: they are the confirmed
purchases without a payment reference) and credited. Stakes were taken from nothing: each user's
history is replayed in time order (credits at purchase, debits at stake, credits at unstake), and
a stake the user's paid tokens did not cover at that moment becomes `void`: kept for the record,
with no voting weight and no ledger entry. Votes already cast keep the weight they were cast with.
"""

from collections import defaultdict
from decimal import Decimal

from django.db import migrations
from django.db.models import F


def build_ledger(apps, schema_editor):
    Purchase = apps.get_model("governance", "Purchase")
    StakingPosition = apps.get_model("governance", "StakingPosition")
    TokenAccount = apps.get_model("governance", "TokenAccount")
    LedgerEntry = apps.get_model("governance", "LedgerEntry")

    Purchase.objects.filter(status="confirmed", confirmed_at__isnull=True).update(
        confirmed_at=F("created_at")
    )
    # (time, order, kind, row): at one instant a credit comes before a debit.
    timeline = defaultdict(list)
    for purchase in Purchase.objects.filter(status="confirmed").order_by("created_at", "id"):
        timeline[purchase.buyer_id].append((purchase.created_at, 0, "purchase", purchase))
    for stake in StakingPosition.objects.order_by("started_at", "id"):
        timeline[stake.owner_id].append((stake.started_at, 1, "stake", stake))
    entries = []
    voided = []
    for user_id, events in timeline.items():
        balance = Decimal(0)
        events.sort(key=lambda event: (event[0], event[1], event[3].pk))
        queue = list(events)
        while queue:
            at, _, kind, row = queue.pop(0)
            if kind == "purchase":
                balance += row.tokens
                entries.append(
                    LedgerEntry(user_id=user_id, amount=row.tokens, reason="purchase_confirmed", purchase=row)
                )
            elif kind == "stake":
                if row.amount > balance:
                    voided.append(row.pk)
                    continue
                balance -= row.amount
                entries.append(LedgerEntry(user_id=user_id, amount=-row.amount, reason="stake", stake=row))
                if row.status == "unstaked":
                    queue.append((row.unstaked_at, 0, "unstake", row))
                    queue.sort(key=lambda event: (event[0], event[1], event[3].pk))
            else:
                balance += row.amount
                entries.append(LedgerEntry(user_id=user_id, amount=row.amount, reason="unstake", stake=row))
        TokenAccount.objects.create(user_id=user_id, available=balance)
    LedgerEntry.objects.bulk_create(entries, batch_size=1000)
    if voided:
        StakingPosition.objects.filter(pk__in=voided).update(status="void", unstaked_at=None)


def unbuild_ledger(apps, schema_editor):
    apps.get_model("governance", "LedgerEntry").objects.all().delete()
    apps.get_model("governance", "TokenAccount").objects.all().delete()
    # A void stake was active or unstaked before; active is what gave it weight then.
    apps.get_model("governance", "StakingPosition").objects.filter(status="void").update(status="active")


class Migration(migrations.Migration):
    dependencies = [
        ("governance", "0003_token_ledger"),
    ]

    operations = [migrations.RunPython(build_ledger, unbuild_ledger)]

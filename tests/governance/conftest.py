from datetime import timedelta
from decimal import Decimal

import pytest
from django.utils import timezone

from governance import services
from tests.support.tokens import funded_stake


@pytest.fixture
def open_proposal(staff_user):
    now = timezone.now()
    proposal = services.proposal_create(
        proposer=staff_user,
        title="Plant more flowers",
        description="More nectar for the hive.",
        voting_starts_at=now - timedelta(minutes=1),
        voting_ends_at=now + timedelta(days=7),
        quorum=Decimal("10"),
    )
    return services.proposal_open(actor=staff_user, proposal_id=proposal.pk)


@pytest.fixture
def staked_user(user):
    funded_stake(user, Decimal("25.5"), lock_days=30)
    return user


@pytest.fixture
def sale(staff_user):
    now = timezone.now()
    return services.sale_create(
        actor=staff_user,
        name="Seed round",
        token_price=Decimal("0.5"),
        allocation=Decimal("100"),
        per_buyer_cap=Decimal("30"),
        starts_at=now - timedelta(hours=1),
        ends_at=now + timedelta(days=1),
    )


WALLET = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"  # EIP-55 test vector


def unlock(stake) -> None:
    """Move a position's lock period into the past (as if its lock days had elapsed)."""
    from governance.models import StakingPosition

    now = timezone.now()
    StakingPosition.objects.filter(pk=stake.pk).update(
        started_at=now - timedelta(days=stake.lock_days + 1), unlocks_at=now - timedelta(seconds=1)
    )

from dataclasses import dataclass
from decimal import Decimal

from django.contrib.auth.models import User
from django.db.models import Q, QuerySet, Sum
from django.db.models.functions import Coalesce
from django.utils import timezone

from governance.models import ZERO, Proposal, Purchase, Sale, StakingPosition, TokenAccount, Vote


def active_stake_total(*, owner: User) -> Decimal:
    """The owner's voting weight: the sum of their active staking positions."""
    total = StakingPosition.objects.filter(owner=owner, status=StakingPosition.Status.ACTIVE).aggregate(
        total=Coalesce(Sum("amount"), ZERO)
    )["total"]
    return Decimal(total)


def _visible(viewer: User | None) -> QuerySet[Proposal]:
    """Drafts are staff's work in progress: everyone else sees them only once opened."""
    queryset: QuerySet[Proposal] = Proposal.objects.select_related("proposer")
    if viewer is None or not viewer.is_staff:
        queryset = queryset.exclude(status=Proposal.Status.DRAFT)
    return queryset


def proposal_list(
    *, viewer: User | None = None, status: str | None = None, limit: int = 100, offset: int = 0
) -> list[Proposal]:
    queryset = _visible(viewer)
    if status:
        queryset = queryset.filter(status=status)
    return list(queryset[offset : offset + limit])


def proposal_get(*, proposal_id: int, viewer: User | None = None) -> Proposal:
    """The proposal; DoesNotExist for a draft the viewer (not staff) may not see, as for none.
    Without a viewer (the services' own reads) any proposal."""
    if viewer is None:
        return Proposal.objects.select_related("proposer").get(pk=proposal_id)
    return _visible(viewer).get(pk=proposal_id)


def proposal_live_tally(*, proposal: Proposal) -> dict[str, Decimal]:
    sums = Vote.objects.filter(proposal=proposal).aggregate(
        **{choice: Coalesce(Sum("weight", filter=Q(choice=choice)), ZERO) for choice in Vote.Choice.values}
    )
    return {choice: Decimal(sums[choice]) for choice in Vote.Choice.values}


def proposal_tally(*, proposal: Proposal) -> dict[str, Decimal]:
    """Stored once closed; computed from the votes while they can still change."""
    if proposal.status in (Proposal.Status.CLOSED, Proposal.Status.EXECUTED):
        return {"for": proposal.tally_for, "against": proposal.tally_against, "abstain": proposal.tally_abstain}
    return proposal_live_tally(proposal=proposal)


def vote_of(*, proposal: Proposal, voter) -> Vote | None:
    return Vote.objects.filter(proposal=proposal, voter=voter).first()


def sale_list(*, limit: int = 100, offset: int = 0) -> list[Sale]:
    return list(Sale.objects.all()[offset : offset + limit])


def sale_get(*, sale_id: int) -> Sale:
    return Sale.objects.get(pk=sale_id)


# Purchases that hold tokens of a sale's allocation (`Sale.sold` counts exactly these).
HOLDING = (Purchase.Status.PENDING, Purchase.Status.CONFIRMED)


def purchased_tokens(*, sale: Sale, buyer, exclude: int | None = None) -> Decimal:
    """The buyer's tokens in `sale` that count against the per-buyer cap: paid or reserved."""
    rows = Purchase.objects.filter(sale=sale, buyer=buyer, status__in=HOLDING)
    if exclude is not None:
        rows = rows.exclude(pk=exclude)
    return Decimal(rows.aggregate(total=Coalesce(Sum("tokens"), ZERO))["total"])


def token_available(*, user_id: int) -> Decimal:
    value = TokenAccount.objects.filter(user_id=user_id).values_list("available", flat=True).first()
    return Decimal(value) if value is not None else ZERO


@dataclass(frozen=True)
class Balance:
    available: Decimal  # paid, not staked: what a stake may take
    staked: Decimal  # in active staking positions: the voting weight
    pending: Decimal  # reserved by purchases not yet paid


def balance_get(*, user: User) -> Balance:
    pending = Purchase.objects.filter(
        buyer=user, status=Purchase.Status.PENDING, expires_at__gt=timezone.now()
    ).aggregate(total=Coalesce(Sum("tokens"), ZERO))["total"]
    return Balance(
        available=token_available(user_id=user.pk), staked=active_stake_total(owner=user), pending=Decimal(pending)
    )


def purchase_list(*, buyer: User, limit: int = 100, offset: int = 0) -> list[Purchase]:
    return list(Purchase.objects.filter(buyer=buyer)[offset : offset + limit])


def stake_list(*, owner: User, limit: int = 100, offset: int = 0) -> list[StakingPosition]:
    return list(StakingPosition.objects.filter(owner=owner)[offset : offset + limit])

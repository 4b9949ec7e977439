"""Governance, private sale and staking. Invariants are PostgreSQL constraints, not just code:
a bug or a race in a service cannot store a second vote, an oversold sale or a negative amount."""

from decimal import Decimal
from typing import TypedDict

from django.conf import settings
from django.db import models
from django.db.models import F, Q


class DecimalShape(TypedDict):
    max_digits: int
    decimal_places: int


# Money and token amounts: exact decimals, 8 places (never float). Sums get more digits.
AMOUNT: DecimalShape = {"max_digits": 28, "decimal_places": 8}
TOTAL: DecimalShape = {"max_digits": 38, "decimal_places": 8}
ZERO = Decimal("0")


class Proposal(models.Model):
    class Status(models.TextChoices):
        DRAFT = "draft"
        OPEN = "open"
        CLOSED = "closed"
        EXECUTED = "executed"
        CANCELLED = "cancelled"

    title = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    proposer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="proposals")
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.DRAFT, db_index=True)
    voting_starts_at = models.DateTimeField()
    voting_ends_at = models.DateTimeField()
    # Total vote weight (for + against + abstain) needed for the result to count.
    quorum = models.DecimalField(**AMOUNT, default=ZERO)
    # Stored when the proposal is closed; while open, the tally is computed from the votes.
    tally_for = models.DecimalField(**TOTAL, default=ZERO)
    tally_against = models.DecimalField(**TOTAL, default=ZERO)
    tally_abstain = models.DecimalField(**TOTAL, default=ZERO)
    passed = models.BooleanField(null=True, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    closed_at = models.DateTimeField(null=True, blank=True)
    executed_at = models.DateTimeField(null=True, blank=True)
    # Highest fencing token (of the `proposal:<pk>` distributed lock) a close or execute was
    # accepted with. A write carrying a fence not greater than this one comes from a holder whose
    # lease expired while a newer holder wrote, and is refused (lifecycle.locks).
    last_fence = models.BigIntegerField(default=0)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.CheckConstraint(
                condition=Q(voting_ends_at__gt=F("voting_starts_at")), name="proposal_window_ends_after_start"
            ),
            models.CheckConstraint(condition=Q(quorum__gte=0), name="proposal_quorum_not_negative"),
            models.CheckConstraint(condition=Q(last_fence__gte=0), name="proposal_last_fence_not_negative"),
            models.CheckConstraint(
                condition=Q(tally_for__gte=0, tally_against__gte=0, tally_abstain__gte=0),
                name="proposal_tally_not_negative",
            ),
            # Executed exactly when executed_at is set, and only a passed proposal.
            models.CheckConstraint(
                condition=(Q(status="executed", executed_at__isnull=False, passed=True))
                | (~Q(status="executed") & Q(executed_at__isnull=True)),
                name="proposal_executed_iff_executed_at",
            ),
        ]

    def __str__(self) -> str:
        return f"#{self.pk} {self.title} ({self.status})"


class Vote(models.Model):
    class Choice(models.TextChoices):
        FOR = "for"
        AGAINST = "against"
        ABSTAIN = "abstain"

    proposal = models.ForeignKey(Proposal, on_delete=models.CASCADE, related_name="votes")
    voter = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="votes")
    choice = models.CharField(max_length=7, choices=Choice.choices)
    # The voter's active stake when the vote was cast (later staking changes nothing).
    weight = models.DecimalField(**TOTAL)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        constraints = [
            models.UniqueConstraint(fields=["proposal", "voter"], name="vote_one_per_voter_and_proposal"),
            models.CheckConstraint(condition=Q(weight__gt=0), name="vote_weight_positive"),
            models.CheckConstraint(condition=Q(choice__in=["for", "against", "abstain"]), name="vote_choice_valid"),
        ]

    def __str__(self) -> str:
        return f"{self.voter} {self.choice} #{self.proposal_id} ({self.weight})"


class Sale(models.Model):
    """A private sale round. `sold` is the running total of tokens sold, kept by purchase_create
    under a row lock; the CHECK makes overselling impossible even for a buggy writer."""

    name = models.CharField(max_length=200, blank=True)
    token_price = models.DecimalField(**AMOUNT)
    allocation = models.DecimalField(**AMOUNT)
    per_buyer_cap = models.DecimalField(**AMOUNT)
    sold = models.DecimalField(**TOTAL, default=ZERO)
    starts_at = models.DateTimeField()
    ends_at = models.DateTimeField()
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-starts_at", "-id"]
        constraints = [
            models.CheckConstraint(condition=Q(token_price__gt=0), name="sale_token_price_positive"),
            models.CheckConstraint(condition=Q(allocation__gt=0), name="sale_allocation_positive"),
            models.CheckConstraint(condition=Q(per_buyer_cap__gt=0), name="sale_per_buyer_cap_positive"),
            models.CheckConstraint(condition=Q(sold__gte=0, sold__lte=F("allocation")), name="sale_never_oversold"),
            models.CheckConstraint(condition=Q(ends_at__gt=F("starts_at")), name="sale_window_ends_after_start"),
        ]

    def __str__(self) -> str:
        return self.name or f"Sale #{self.pk}"

    @property
    def remaining(self) -> Decimal:
        return self.allocation - self.sold


class Purchase(models.Model):
    """A buyer's order in a sale. It reserves its tokens of the allocation (`Sale.sold`) while
    `pending`; the payment processor's webhook (or staff, in the admin) confirms it, and only then
    are the tokens credited to the buyer's token account. A pending purchase not paid within
    `GOVERNANCE_PURCHASE_PENDING_TTL` expires and gives its reservation back."""

    class Status(models.TextChoices):
        PENDING = "pending"
        CONFIRMED = "confirmed"
        FAILED = "failed"
        EXPIRED = "expired"
        REFUNDED = "refunded"

    sale = models.ForeignKey(Sale, on_delete=models.PROTECT, related_name="purchases")
    buyer = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="purchases")
    # EVM address in its EIP-55 checksummed form.
    wallet = models.CharField(max_length=42)
    amount = models.DecimalField(**AMOUNT)  # to pay, in the sale's currency
    tokens = models.DecimalField(**AMOUNT)  # bought: amount / token_price, rounded down
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.PENDING)
    created_at = models.DateTimeField(auto_now_add=True)
    # A pending purchase's reservation ends here (the worker then expires it).
    expires_at = models.DateTimeField(null=True, blank=True)
    confirmed_at = models.DateTimeField(null=True, blank=True)
    # The payment processor's id of the payment that settled this purchase (paid or failed). One
    # payment settles one purchase, once: a webhook delivered twice finds it here.
    payment_reference = models.CharField(max_length=255, blank=True, default="")

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [
            models.Index(fields=["sale", "buyer"], name="purchase_sale_buyer_idx"),
            # The worker's scan for due reservations.
            models.Index(fields=["expires_at"], name="purchase_pending_expiry_idx", condition=Q(status="pending")),
        ]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="purchase_amount_positive"),
            models.CheckConstraint(condition=Q(tokens__gt=0), name="purchase_tokens_positive"),
            models.CheckConstraint(condition=Q(wallet__regex=r"^0x[0-9a-fA-F]{40}$"), name="purchase_wallet_format"),
            models.CheckConstraint(
                condition=Q(status__in=["pending", "confirmed", "failed", "expired", "refunded"]),
                name="purchase_status_valid",
            ),
            models.CheckConstraint(
                condition=~Q(status="pending") | Q(expires_at__isnull=False), name="purchase_pending_has_expiry"
            ),
            models.CheckConstraint(
                condition=Q(status="confirmed", confirmed_at__isnull=False) | ~Q(status="confirmed"),
                name="purchase_confirmed_has_time",
            ),
            models.UniqueConstraint(
                fields=["payment_reference"],
                condition=~Q(payment_reference=""),
                name="purchase_payment_reference_unique",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.buyer} {self.tokens} tokens in {self.sale} ({self.status})"


class StakingPosition(models.Model):
    class Status(models.TextChoices):
        ACTIVE = "active"
        UNSTAKED = "unstaked"
        # Recorded before stakes were paid for, and not covered by the owner's paid tokens when
        # the ledger was introduced: kept for the record, with no voting weight.
        VOID = "void"

    owner = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="stakes")
    amount = models.DecimalField(**AMOUNT)
    lock_days = models.PositiveIntegerField()
    started_at = models.DateTimeField()
    unlocks_at = models.DateTimeField()
    status = models.CharField(max_length=10, choices=Status.choices, default=Status.ACTIVE)
    unstaked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-started_at", "-id"]
        indexes = [models.Index(fields=["owner", "status"], name="stake_owner_status_idx")]
        constraints = [
            models.CheckConstraint(condition=Q(amount__gt=0), name="stake_amount_positive"),
            models.CheckConstraint(condition=Q(unlocks_at__gte=F("started_at")), name="stake_unlocks_after_start"),
            models.CheckConstraint(
                condition=(Q(status="active", unstaked_at__isnull=True))
                | Q(status="unstaked", unstaked_at__isnull=False, unstaked_at__gte=F("unlocks_at"))
                | Q(status="void", unstaked_at__isnull=True),
                name="stake_unstaked_only_after_unlock",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.owner} {self.amount} ({self.status})"


class TokenAccount(models.Model):
    """A user's paid tokens that are not staked. Changed only together with a LedgerEntry, by a
    conditional UPDATE (`available >= amount` for a debit); the CHECK refuses a negative balance
    whatever a writer does."""

    user = models.OneToOneField(
        settings.AUTH_USER_MODEL, on_delete=models.PROTECT, primary_key=True, related_name="token_account"
    )
    available = models.DecimalField(**TOTAL, default=ZERO)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        constraints = [models.CheckConstraint(condition=Q(available__gte=0), name="token_account_never_negative")]

    def __str__(self) -> str:
        return f"{self.user}: {self.available}"


class LedgerEntry(models.Model):
    """One movement of a user's tokens: the account's balance is the sum of its entries.

    Each entry names what it belongs to, and the unique constraints make each movement happen
    once: one credit per confirmed purchase, one debit per stake, one credit per unstake."""

    class Reason(models.TextChoices):
        PURCHASE_CONFIRMED = "purchase_confirmed"
        STAKE = "stake"
        UNSTAKE = "unstake"

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="ledger_entries")
    # Signed: credits are positive, debits negative.
    amount = models.DecimalField(**AMOUNT)
    reason = models.CharField(max_length=20, choices=Reason.choices)
    purchase = models.ForeignKey(Purchase, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    stake = models.ForeignKey(StakingPosition, on_delete=models.PROTECT, null=True, blank=True, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-created_at", "-id"]
        verbose_name_plural = "ledger entries"
        indexes = [models.Index(fields=["user", "-created_at"], name="ledger_user_created_idx")]
        constraints = [
            models.CheckConstraint(
                condition=(
                    Q(reason="purchase_confirmed", amount__gt=0, purchase__isnull=False, stake__isnull=True)
                    | Q(reason="stake", amount__lt=0, stake__isnull=False, purchase__isnull=True)
                    | Q(reason="unstake", amount__gt=0, stake__isnull=False, purchase__isnull=True)
                ),
                name="ledger_entry_reason_matches",
            ),
            models.UniqueConstraint(
                fields=["purchase"], condition=Q(reason="purchase_confirmed"), name="ledger_one_credit_per_purchase"
            ),
            models.UniqueConstraint(fields=["stake", "reason"], name="ledger_one_entry_per_stake_and_reason"),
        ]

    def __str__(self) -> str:
        return f"{self.user} {self.amount:+} ({self.reason})"

"""Every write of governance, the private sale and staking: one transaction each.

Races are settled by PostgreSQL, never by a check-then-write in Python alone:
- one vote per voter and proposal: a unique constraint, INSERT ... ON CONFLICT DO NOTHING (a
  concurrent second vote waits for the first to commit, inserts nothing -> 409);
- a vote and the proposal's closing: the vote holds the proposal row FOR SHARE, closing takes it
  FOR UPDATE, so the stored tally contains every vote that was acknowledged;
- the sale's allocation and per-buyer cap: the sale row is locked FOR UPDATE for the purchase,
  and CHECK (sold <= allocation) backs it; a pending purchase holds its tokens until it is paid,
  fails or expires (conditional UPDATEs on its status, so exactly one of them happens);
- a token account's balance: debits are conditional UPDATEs (`... WHERE available >= amount`),
  and CHECK (available >= 0) backs them, so concurrent stakes never overdraw it;
- execution and unstaking: conditional UPDATEs (`... WHERE status = ...`), so two instances
  cannot both do it;
- closing and executing through the API run under the distributed lock (`*_exclusive`), and the
  lock's fencing token is checked on the row (`... WHERE last_fence < fence`), so a lock holder
  paused past its lease cannot write after a newer holder did.
"""

import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import ROUND_DOWN, Decimal

from django.contrib.auth.models import User
from django.db import connection, transaction
from django.db.models import F
from django.utils import timezone

from core.errors import Busy, Conflict, Forbidden, InvalidInput, NotFound
from governance import selectors
from governance.conf import governance_settings
from governance.models import LedgerEntry, Proposal, Purchase, Sale, StakingPosition, TokenAccount, Vote
from governance.wallets import InvalidWallet, normalize_wallet
from lifecycle.locks import LockLost, LockTimeout, critical_section, distributed_lock
from lifecycle.outbox.models import EventKind
from lifecycle.outbox.queries import event_insert
from lifecycle.outbox.services import record_event

logger = logging.getLogger(__name__)

TOKEN_QUANTUM = Decimal("0.00000001")


def _invalid(field: str, message: str) -> InvalidInput:
    return InvalidInput(f"{field}: {message}", fields={field: [message]})


def _aware(value: datetime) -> datetime:
    # A datetime without a zone is taken as UTC (the API documents UTC).
    return timezone.make_aware(value, UTC) if timezone.is_naive(value) else value


def _window(starts_at: datetime, ends_at: datetime, *, end_field: str) -> tuple[datetime, datetime]:
    starts_at, ends_at = _aware(starts_at), _aware(ends_at)
    if ends_at <= starts_at:
        raise _invalid(end_field, "Must be later than the start.")
    return starts_at, ends_at


def _positive(field: str, value: Decimal) -> Decimal:
    if not value.is_finite() or value <= 0:
        raise _invalid(field, "Must be greater than zero.")
    return value


# --- proposals and votes ---------------------------------------------------------------------


def proposal_create(
    *,
    proposer: User,
    title: str,
    description: str = "",
    voting_starts_at: datetime,
    voting_ends_at: datetime,
    quorum: Decimal,
) -> Proposal:
    if not proposer.is_staff:
        raise Forbidden("Only staff can create proposals.")
    if not title.strip():
        raise _invalid("title", "Must not be blank.")
    if not quorum.is_finite() or quorum < 0:
        raise _invalid("quorum", "Must be zero or more.")
    starts, ends = _window(voting_starts_at, voting_ends_at, end_field="voting_ends_at")
    with transaction.atomic():
        return Proposal.objects.create(
            proposer=proposer,
            title=title.strip(),
            description=description,
            voting_starts_at=starts,
            voting_ends_at=ends,
            quorum=quorum,
        )


def _transition_conflict(proposal_id: int, action: str, expected: str) -> Exception:
    proposal = Proposal.objects.filter(pk=proposal_id).only("status").first()
    if proposal is None:
        return NotFound(f"No proposal with id {proposal_id}.")
    return Conflict(
        f"Cannot {action} proposal {proposal_id}: it is {proposal.status}, not {expected}.",
        code=f"proposal_{proposal.status}",
    )


def proposal_open(*, actor: User, proposal_id: int) -> Proposal:
    if not actor.is_staff:
        raise Forbidden("Only staff can open proposals.")
    with transaction.atomic():
        updated = Proposal.objects.filter(pk=proposal_id, status=Proposal.Status.DRAFT).update(
            status=Proposal.Status.OPEN
        )
        if not updated:
            raise _transition_conflict(proposal_id, "open", "draft")
        return selectors.proposal_get(proposal_id=proposal_id)


def proposal_lock_name(proposal_id: int) -> str:
    return f"proposal:{proposal_id}"


def _claim_fence(proposal_id: int, fence: int) -> None:
    """Record `fence` on the row if it is newer than every fence accepted so far, else refuse.

    A conditional UPDATE, in the caller's transaction: if the write is refused later, the claim is
    rolled back with it."""
    if Proposal.objects.filter(pk=proposal_id, last_fence__lt=fence).update(last_fence=fence):
        return
    last = Proposal.objects.filter(pk=proposal_id).values_list("last_fence", flat=True).first()
    if last is None:
        raise NotFound(f"No proposal with id {proposal_id}.")
    raise Conflict(
        f"Proposal {proposal_id}: lock fence {fence} is not newer than the last accepted fence {last}; "
        "this lock holder's lease expired and a newer holder wrote first.",
        code="stale_fence",
    )


def proposal_close(*, actor: User, proposal_id: int, fence: int | None = None) -> Proposal:
    """open -> closed, storing the tally. With `fence` (the `proposal:<pk>` lock's token), refused
    unless the fence is newer than the last one accepted on the row."""
    if not actor.is_staff:
        raise Forbidden("Only staff can close proposals.")
    with transaction.atomic():
        # FOR UPDATE waits for votes in flight (they hold the row FOR SHARE): none is left out.
        proposal = Proposal.objects.select_for_update().filter(pk=proposal_id).first()
        if proposal is None:
            raise NotFound(f"No proposal with id {proposal_id}.")
        if fence is not None:
            _claim_fence(proposal_id, fence)
            proposal.last_fence = fence
        if proposal.status != Proposal.Status.OPEN:
            raise _transition_conflict(proposal_id, "close", "open")
        tally = selectors.proposal_live_tally(proposal=proposal)
        total = tally["for"] + tally["against"] + tally["abstain"]
        proposal.tally_for, proposal.tally_against, proposal.tally_abstain = (
            tally["for"],
            tally["against"],
            tally["abstain"],
        )
        proposal.passed = total >= proposal.quorum and total > 0 and tally["for"] > tally["against"]
        proposal.status = Proposal.Status.CLOSED
        proposal.closed_at = timezone.now()
        proposal.save(update_fields=["tally_for", "tally_against", "tally_abstain", "passed", "status", "closed_at"])
        record_event(
            kind=EventKind.GOVERNANCE_EVENT,
            payload={
                "action": "proposal_closed",
                "proposal_id": proposal_id,
                "actor_id": actor.pk,
                "tally": tally,
                "passed": proposal.passed,
            },
        )
        return proposal


def proposal_execute(*, actor: User, proposal_id: int, fence: int | None = None) -> Proposal:
    """closed and passed -> executed, once: a conditional UPDATE, so two instances cannot both
    execute. With `fence` (the `proposal:<pk>` lock's token) the same UPDATE also requires the
    fence to be newer than the last one accepted on the row, and records it."""
    if not actor.is_staff:
        raise Forbidden("Only staff can execute proposals.")
    with transaction.atomic():
        rows = Proposal.objects.filter(pk=proposal_id, status=Proposal.Status.CLOSED, passed=True)
        changes: dict = {"status": Proposal.Status.EXECUTED, "executed_at": timezone.now()}
        if fence is not None:
            rows = rows.filter(last_fence__lt=fence)
            changes["last_fence"] = fence
        updated = rows.update(**changes)
        if not updated:
            proposal = Proposal.objects.filter(pk=proposal_id).first()
            if proposal is None:
                raise NotFound(f"No proposal with id {proposal_id}.")
            if fence is not None and proposal.last_fence >= fence:
                _claim_fence(proposal_id, fence)  # raises the stale-fence conflict
            if proposal.status == Proposal.Status.CLOSED:
                raise Conflict(
                    f"Proposal {proposal_id} did not pass (quorum or majority not reached): it cannot be executed.",
                    code="proposal_not_passed",
                )
            raise _transition_conflict(proposal_id, "execute", "closed")
        record_event(
            kind=EventKind.GOVERNANCE_EVENT,
            payload={"action": "proposal_executed", "proposal_id": proposal_id, "actor_id": actor.pk},
        )
        return selectors.proposal_get(proposal_id=proposal_id)


@critical_section("governance_voting")
def _under_voting_lock(run: Callable[[], None]) -> None:
    """Tallies run one at a time across every instance."""
    run()


def _exclusive(proposal_id: int, write: Callable[[int], Proposal], *, voting: bool = False) -> Proposal:
    """Run `write(fence)` under the `proposal:<pk>` lock (and `governance_voting` first, if
    `voting`). Lock order is always governance_voting -> proposal:<pk>, so no deadlock."""
    result: Proposal | None = None

    def fenced() -> None:
        nonlocal result
        with distributed_lock.acquire(proposal_lock_name(proposal_id), renew=True) as lease:
            result = write(lease.fence)

    try:
        if voting:
            _under_voting_lock(fenced)
        else:
            fenced()
    except LockTimeout as exc:
        raise Busy(
            f"Proposal {proposal_id} is being closed or executed elsewhere; retry shortly.", code="proposal_busy"
        ) from exc
    except LockLost:
        if result is None:
            raise
        # The write itself was accepted with our fence, so no newer holder had written before it:
        # the committed change is valid even though the lease ran out by the end of the block.
        logger.warning("proposal %s: lock lease lost after the fenced write committed", proposal_id)
    assert result is not None
    return result


def proposal_close_exclusive(*, actor: User, proposal_id: int) -> Proposal:
    """What the API calls: tallies run one at a time across all instances (`governance_voting`),
    and the close is fenced with the `proposal:<pk>` lock's token."""
    if not actor.is_staff:
        raise Forbidden("Only staff can close proposals.")
    return _exclusive(
        proposal_id, lambda fence: proposal_close(actor=actor, proposal_id=proposal_id, fence=fence), voting=True
    )


def proposal_execute_exclusive(*, actor: User, proposal_id: int) -> Proposal:
    """What the API calls: execution under the `proposal:<pk>` lock, fenced on the row. The lease
    renews itself while the execution runs; if it is lost anyway, the fence refuses the write."""
    if not actor.is_staff:
        raise Forbidden("Only staff can execute proposals.")
    return _exclusive(proposal_id, lambda fence: proposal_execute(actor=actor, proposal_id=proposal_id, fence=fence))


# The whole vote in one statement (one round trip), each part as the separate statements had it:
# - `p`: the proposal row, locked FOR KEY SHARE (votes run side by side, but closing takes FOR
#   UPDATE and so waits for them; a vote that starts after the close re-reads the row and sees
#   `closed`, so it inserts nothing). Django has no FOR KEY SHARE, hence SQL.
# - `w`: the voter's weight, the active stake summed now.
# - `v`: the vote, inserted only if the proposal is open, inside its window and the weight is
#   positive; ON CONFLICT on the one-vote-per-voter constraint, so a second vote (even a
#   concurrent one: it waits for the first to commit) inserts nothing, without an error that
#   would need a savepoint.
# - `e`: the `governance_event` outbox row, written if and only if the vote is: the outbox app's
#   own INSERT (lifecycle/outbox/queries.py), one row per row of `v`, so it covers every outbox
#   column as record_event writes it.
# The outer SELECT returns what the refusal message needs; no row means no such proposal.
_VOTE_SQL = """
    WITH p AS (
        SELECT id, status, voting_starts_at, voting_ends_at FROM {proposal} WHERE id = %(proposal_id)s
        FOR KEY SHARE
    ), w AS (
        SELECT COALESCE(SUM(amount), 0) AS weight FROM {stake} WHERE owner_id = %(voter_id)s AND status = %(active)s
    ), v AS (
        INSERT INTO {vote} (proposal_id, voter_id, choice, weight, created_at)
        SELECT p.id, %(voter_id)s, %(choice)s, w.weight, %(now)s FROM p, w
        WHERE p.status = %(open)s AND p.voting_starts_at <= %(now)s AND %(now)s < p.voting_ends_at
              AND w.weight > 0
        ON CONFLICT (proposal_id, voter_id) DO NOTHING RETURNING id
    ), e AS (
        {event}
    )
    SELECT p.status, p.voting_starts_at, p.voting_ends_at, w.weight, (SELECT id FROM v) FROM p, w
"""


def vote_cast(*, voter: User, proposal_id: int, choice: str) -> Vote:
    if choice not in Vote.Choice.values:
        raise _invalid("choice", f"Must be one of {', '.join(Vote.Choice.values)}.")
    now = timezone.now()
    event = event_insert(
        kind=EventKind.GOVERNANCE_EVENT,
        payload={"action": "vote_cast", "proposal_id": proposal_id, "voter_id": voter.pk, "choice": choice},
        source="v, w",
        payload_sql="jsonb_build_object('vote_id', v.id, 'weight', w.weight::text)",
        created_at=now,
    )
    sql = _VOTE_SQL.format(
        proposal=Proposal._meta.db_table,
        stake=StakingPosition._meta.db_table,
        vote=Vote._meta.db_table,
        event=event.sql,
    )
    params = {
        "proposal_id": proposal_id,
        "voter_id": voter.pk,
        "active": StakingPosition.Status.ACTIVE,
        "choice": choice,
        "now": now,
        "open": Proposal.Status.OPEN,
        **event.params,
    }
    # One statement, so no transaction of its own is needed: under a caller's transaction (the
    # Idempotency-Key's) it joins it; alone it is atomic by itself. Refusals are raised after the
    # statement completed normally, so they do not doom the caller's transaction (a page goes on
    # to render the form with the message).
    with connection.cursor() as cursor:
        cursor.execute(sql, params)
        row = cursor.fetchone()
    if row is None or (row[0] == Proposal.Status.DRAFT and not voter.is_staff):
        # A draft is staff's work in progress: to anyone else it does not exist yet.
        raise NotFound(f"No proposal with id {proposal_id}.")
    status, starts_at, ends_at, weight, vote_id = row
    refusal = _vote_refusal(proposal_id, status, starts_at, ends_at, weight, now=now)
    if refusal is None and vote_id is None:
        refusal = Conflict(f"You have already voted on proposal {proposal_id}.", code="already_voted")
    if refusal is not None:
        raise refusal
    return Vote(id=vote_id, proposal_id=proposal_id, voter=voter, choice=choice, weight=weight, created_at=now)


def _vote_refusal(proposal_id: int, status: str, starts_at, ends_at, weight: Decimal, *, now) -> Exception | None:
    if status != Proposal.Status.OPEN:
        return Conflict(f"Proposal {proposal_id} is {status}: votes are not accepted.", code="proposal_not_open")
    if now < starts_at:
        return Conflict(
            f"Voting on proposal {proposal_id} starts at {starts_at.isoformat()}.", code="voting_not_started"
        )
    if now >= ends_at:
        return Conflict(f"Voting on proposal {proposal_id} ended at {ends_at.isoformat()}.", code="voting_ended")
    if weight <= 0:
        return Forbidden("You have no active stake: stake tokens to get voting weight, then vote.", code="no_stake")
    return None


# --- private sale ----------------------------------------------------------------------------


def sale_create(
    *,
    actor: User,
    token_price: Decimal,
    allocation: Decimal,
    per_buyer_cap: Decimal,
    starts_at: datetime,
    ends_at: datetime,
    name: str = "",
) -> Sale:
    if not actor.is_staff:
        raise Forbidden("Only staff can create sales.")
    _positive("token_price", token_price)
    _positive("allocation", allocation)
    _positive("per_buyer_cap", per_buyer_cap)
    if per_buyer_cap > allocation:
        raise _invalid("per_buyer_cap", "Must not exceed the allocation.")
    starts, ends = _window(starts_at, ends_at, end_field="ends_at")
    with transaction.atomic():
        return Sale.objects.create(
            name=name,
            token_price=token_price,
            allocation=allocation,
            per_buyer_cap=per_buyer_cap,
            starts_at=starts,
            ends_at=ends,
        )


def purchase_create(*, buyer: User, sale_id: int, wallet: str, amount: Decimal) -> Purchase:
    """A pending purchase, reserving its tokens of the allocation until it is paid or expires."""
    try:
        wallet = normalize_wallet(wallet)
    except InvalidWallet as exc:
        raise _invalid("wallet", str(exc)) from None
    _positive("amount", amount)
    with transaction.atomic():
        # The sale row lock serialises purchases of one sale across every instance: the
        # remaining allocation and the buyer's total are read and written under it.
        sale = Sale.objects.select_for_update().filter(pk=sale_id).first()
        if sale is None:
            raise _invalid("sale", f"No sale with id {sale_id}.")
        now = timezone.now()
        if now < sale.starts_at:
            raise Conflict(f"The sale opens at {sale.starts_at.isoformat()}.", code="sale_not_started")
        if now >= sale.ends_at:
            raise Conflict(f"The sale ended at {sale.ends_at.isoformat()}.", code="sale_ended")
        tokens = (amount / sale.token_price).quantize(TOKEN_QUANTUM, rounding=ROUND_DOWN)
        if tokens <= 0:
            raise _invalid("amount", f"Too small to buy any token at {sale.token_price} per token.")
        # Reservations past their time give their tokens back now, not only when the worker
        # next runs: a sale is never "sold out" to abandoned checkouts.
        if _expire_due(now=now, sale_id=sale.pk):
            sale.refresh_from_db(fields=["sold"])
        _reserve(sale, buyer=buyer, tokens=tokens)
        return Purchase.objects.create(
            sale=sale,
            buyer=buyer,
            wallet=wallet,
            amount=amount,
            tokens=tokens,
            expires_at=now + timedelta(seconds=governance_settings.PURCHASE_PENDING_TTL),
        )


def _reserve(sale: Sale, *, buyer: User, tokens: Decimal, exclude: int | None = None) -> None:
    """Take `tokens` of `sale`'s allocation for `buyer`, or refuse. The caller holds the sale row
    FOR UPDATE; CHECK (sold <= allocation) backs the arithmetic."""
    remaining = sale.allocation - sale.sold
    if remaining <= 0:
        raise Conflict("The sale is sold out.", code="sold_out")
    if tokens > remaining:
        raise Conflict(f"Only {remaining} tokens are left; this purchase is for {tokens}.", code="sold_out")
    bought = selectors.purchased_tokens(sale=sale, buyer=buyer, exclude=exclude)
    if bought + tokens > sale.per_buyer_cap:
        left = max(sale.per_buyer_cap - bought, Decimal(0))
        raise Conflict(
            f"The per-buyer cap is {sale.per_buyer_cap} tokens; you have {bought} and can buy {left} more.",
            code="cap_reached",
        )
    Sale.objects.filter(pk=sale.pk).update(sold=F("sold") + tokens)
    sale.sold += tokens


def _release(released: list[tuple[int, Decimal]]) -> None:
    """Give reserved tokens back to their sales: (sale id, tokens) pairs, sales in id order so
    that two releases never wait on each other's rows."""
    per_sale: dict[int, Decimal] = {}
    for sale_id, tokens in released:
        per_sale[sale_id] = per_sale.get(sale_id, Decimal(0)) + tokens
    for sale_id in sorted(per_sale):
        Sale.objects.filter(pk=sale_id).update(sold=F("sold") - per_sale[sale_id])


def _expire_due(*, now: datetime, sale_id: int | None = None, limit: int = 1000) -> int:
    """pending -> expired for reservations past `expires_at`, giving their tokens back. A
    conditional UPDATE: a purchase confirmed at the same moment is either confirmed (and not
    expired) or expired (and the confirmation sees it), never both. In the caller's transaction."""
    due = Purchase.objects.filter(status=Purchase.Status.PENDING, expires_at__lte=now)
    if sale_id is not None:
        due = due.filter(sale_id=sale_id)
    ids = list(due.order_by("expires_at").values_list("pk", flat=True)[:limit])
    if not ids:
        return 0
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {Purchase._meta.db_table} SET status = %s WHERE id = ANY(%s) AND status = %s "
            "AND expires_at <= %s RETURNING sale_id, tokens",
            [Purchase.Status.EXPIRED, ids, Purchase.Status.PENDING, now],
        )
        released = cursor.fetchall()
    _release(released)
    return len(released)


def purchase_expire_pending(*, now: datetime | None = None) -> int:
    """The worker's pass (governance/tasks.py): expire every reservation past its time, one
    transaction per sale, under the sale's row lock like every other change of its allocation
    (always sale row first, then purchase rows: no deadlock with a purchase or a payment).
    Returns how many expired. Safe on several workers at once."""
    now = now or timezone.now()
    due = Purchase.objects.filter(status=Purchase.Status.PENDING, expires_at__lte=now)
    total = 0
    for sale_id in sorted(set(due.values_list("sale_id", flat=True))):
        while True:
            with transaction.atomic():
                Sale.objects.select_for_update().filter(pk=sale_id).first()
                expired = _expire_due(now=now, sale_id=sale_id)
            total += expired
            if expired < 1000:
                break
    if total:
        logger.info("%s pending purchases expired", total)
    return total


@dataclass(frozen=True)
class PaymentResult:
    purchase: Purchase
    # False when this payment had already been applied (a webhook delivered again).
    changed: bool


def purchase_settle(*, purchase_id: int, paid: bool, reference: str, actor: User | None = None) -> PaymentResult:
    """Apply the payment processor's verdict on a purchase, once per payment reference.

    Paid: pending -> confirmed, and the tokens are credited to the buyer's account (one ledger
    entry). A purchase that expired meanwhile is confirmed only if its tokens can be reserved
    again (else 409 `purchase_expired`: the payment must be refunded). Failed: pending -> failed,
    and the reservation is given back. The same reference again changes nothing. `actor` is the
    staff user confirming by hand (the admin), None for the processor's webhook."""
    if not reference or len(reference) > 255:
        raise _invalid("reference", "Must be 1 to 255 characters.")
    sale_id = Purchase.objects.filter(pk=purchase_id).values_list("sale_id", flat=True).first()
    if sale_id is None:
        raise NotFound(f"No purchase with id {purchase_id}.")
    with transaction.atomic():
        # The sale row first, then the purchase row, as every writer of the allocation takes
        # them: this orders the payment against the worker's expiry and a concurrent delivery.
        sale = Sale.objects.select_for_update().get(pk=sale_id)
        purchase = Purchase.objects.select_for_update().get(pk=purchase_id)
        if purchase.payment_reference == reference:
            return PaymentResult(purchase=purchase, changed=False)
        used = Purchase.objects.filter(payment_reference=reference).values_list("pk", flat=True).first()
        if used is not None:
            raise Conflict(f"Payment {reference} already settled purchase {used}.", code="reference_used")
        if purchase.status not in (Purchase.Status.PENDING, Purchase.Status.EXPIRED):
            raise Conflict(
                f"Purchase {purchase_id} is {purchase.status}, not pending: payment {reference} was not applied.",
                code=f"purchase_{purchase.status}",
            )
        now = timezone.now()
        if not paid:
            if purchase.status == Purchase.Status.PENDING:
                _release([(purchase.sale_id, purchase.tokens)])
            purchase.status, purchase.payment_reference = Purchase.Status.FAILED, reference
            purchase.save(update_fields=["status", "payment_reference"])
            return PaymentResult(purchase=purchase, changed=True)
        if purchase.status == Purchase.Status.EXPIRED:
            try:
                _reserve(sale, buyer=purchase.buyer, tokens=purchase.tokens, exclude=purchase.pk)
            except Conflict as exc:
                raise Conflict(
                    f"Purchase {purchase_id} expired and its tokens are no longer available ({exc.detail}): "
                    f"refund payment {reference}.",
                    code="purchase_expired",
                ) from None
        purchase.status, purchase.payment_reference, purchase.confirmed_at = (
            Purchase.Status.CONFIRMED,
            reference,
            now,
        )
        purchase.save(update_fields=["status", "payment_reference", "confirmed_at"])
        _credit(user_id=purchase.buyer_id, amount=purchase.tokens)
        LedgerEntry.objects.create(
            user_id=purchase.buyer_id,
            amount=purchase.tokens,
            reason=LedgerEntry.Reason.PURCHASE_CONFIRMED,
            purchase=purchase,
        )
        record_event(
            kind=EventKind.GOVERNANCE_EVENT,
            payload={
                "action": "purchase_confirmed",
                "purchase_id": purchase.pk,
                "sale_id": purchase.sale_id,
                "buyer_id": purchase.buyer_id,
                "tokens": str(purchase.tokens),
                "reference": reference,
                "actor_id": actor.pk if actor is not None else None,
            },
        )
        return PaymentResult(purchase=purchase, changed=True)


def purchase_confirm_by_staff(*, actor: User, purchase_id: int) -> PaymentResult:
    """The admin's confirmation (a payment staff checked themselves): the webhook's service."""
    if not actor.is_staff:
        raise Forbidden("Only staff can confirm purchases.")
    result = purchase_settle(purchase_id=purchase_id, paid=True, reference=f"manual:{purchase_id}", actor=actor)
    if not result.changed:
        raise Conflict(f"Purchase {purchase_id} is already confirmed.", code="purchase_confirmed")
    return result


# --- token accounts ----------------------------------------------------------------------------


def _credit(*, user_id: int, amount: Decimal) -> None:
    # An upsert: the account exists from the first credit on, and concurrent credits add up.
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {TokenAccount._meta.db_table} (user_id, available, updated_at) VALUES (%s, %s, %s) "
            "ON CONFLICT (user_id) DO UPDATE SET available = "
            f"{TokenAccount._meta.db_table}.available + EXCLUDED.available, updated_at = EXCLUDED.updated_at",
            [user_id, amount, timezone.now()],
        )


def _debit(*, user_id: int, amount: Decimal, field: str) -> None:
    """Take `amount` from the account, or refuse with 409 `insufficient_balance` naming what is
    available. One conditional UPDATE: concurrent debits queue on the row, and each sees the
    balance the previous one left, so none overdraws (CHECK available >= 0 backs it)."""
    updated = TokenAccount.objects.filter(user_id=user_id, available__gte=amount).update(
        available=F("available") - amount, updated_at=timezone.now()
    )
    if not updated:
        available = selectors.token_available(user_id=user_id)
        message = f"Only {available} tokens are available (paid and not staked); this needs {amount}."
        raise Conflict(message, code="insufficient_balance", fields={field: [message]})


# --- staking ---------------------------------------------------------------------------------


def stake_create(*, owner: User, amount: Decimal, lock_days: int) -> StakingPosition:
    """Stake paid tokens: the account is debited in the same transaction as the position."""
    _positive("amount", amount)
    max_days = governance_settings.MAX_LOCK_DAYS
    if not 1 <= lock_days <= max_days:
        raise _invalid("lock_days", f"Must be between 1 and {max_days}.")
    now = timezone.now()
    with transaction.atomic():
        _debit(user_id=owner.pk, amount=amount, field="amount")
        stake = StakingPosition.objects.create(
            owner=owner, amount=amount, lock_days=lock_days, started_at=now, unlocks_at=now + timedelta(days=lock_days)
        )
        LedgerEntry.objects.create(user=owner, amount=-amount, reason=LedgerEntry.Reason.STAKE, stake=stake)
        return stake


def stake_unstake(*, owner: User, stake_id: int) -> StakingPosition:
    """active -> unstaked after unlock, once (a conditional UPDATE); the tokens return to the
    account in the same transaction."""
    now = timezone.now()
    with transaction.atomic():
        updated = StakingPosition.objects.filter(
            pk=stake_id, owner=owner, status=StakingPosition.Status.ACTIVE, unlocks_at__lte=now
        ).update(status=StakingPosition.Status.UNSTAKED, unstaked_at=now)
        stake = StakingPosition.objects.filter(pk=stake_id, owner=owner).first()
        if stake is None:
            raise NotFound(f"You have no staking position with id {stake_id}.")
        if not updated:
            if stake.status == StakingPosition.Status.UNSTAKED:
                raise Conflict(f"Staking position {stake_id} is already unstaked.", code="already_unstaked")
            if stake.status == StakingPosition.Status.VOID:
                raise Conflict(f"Staking position {stake_id} is void: it was never paid for.", code="stake_void")
            raise Conflict(
                f"Staking position {stake_id} is locked until {stake.unlocks_at.isoformat()}.", code="still_locked"
            )
        _credit(user_id=owner.pk, amount=stake.amount)
        LedgerEntry.objects.create(user=owner, amount=stake.amount, reason=LedgerEntry.Reason.UNSTAKE, stake=stake)
        return stake

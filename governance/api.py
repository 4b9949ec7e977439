"""JSON API of governance, the private sale and staking (paths and fields are a contract)."""

from datetime import datetime
from decimal import Decimal
from typing import Literal

from django.http import HttpRequest
from ninja import Field, Path, Query, Router, Schema, Status
from pydantic import ValidationError as PydanticValidationError

from core.errors import InvalidInput, NotFound
from core.http import ApiRequest
from core.schemas import ERRORS, NO_NUL, BodySchema, DateTimeIn, Id, NonNegativeAmount, PositiveAmount, QueryInt
from governance import payments, selectors, services
from governance.conf import governance_settings
from governance.models import Proposal, Purchase, Sale, StakingPosition, Vote
from lifecycle.idempotency.decorators import idempotent

router = Router(tags=["governance"])


class Page(Schema):
    limit: QueryInt = Field(100, ge=1, le=500)
    offset: QueryInt = Field(0, ge=0, le=1_000_000)


# --- proposals ---------------------------------------------------------------------------------


class ProposalIn(BodySchema):
    title: str = Field(min_length=1, max_length=200, pattern=NO_NUL)
    description: str = Field("", max_length=20_000, pattern=NO_NUL)
    voting_starts_at: DateTimeIn
    voting_ends_at: DateTimeIn
    quorum: NonNegativeAmount


class ProposalOut(Schema):
    id: int
    title: str
    description: str
    proposer: str
    status: str
    voting_starts_at: datetime
    voting_ends_at: datetime
    quorum: Decimal
    tally: dict[str, Decimal]
    passed: bool | None
    created_at: datetime
    closed_at: datetime | None
    executed_at: datetime | None


def _proposal_out(proposal: Proposal) -> dict:
    return {
        "id": proposal.pk,
        "title": proposal.title,
        "description": proposal.description,
        "proposer": proposal.proposer.get_username(),
        "status": proposal.status,
        "voting_starts_at": proposal.voting_starts_at,
        "voting_ends_at": proposal.voting_ends_at,
        "quorum": proposal.quorum,
        "tally": selectors.proposal_tally(proposal=proposal),
        "passed": proposal.passed,
        "created_at": proposal.created_at,
        "closed_at": proposal.closed_at,
        "executed_at": proposal.executed_at,
    }


def _proposal(request: ApiRequest, proposal_id: int) -> Proposal:
    try:
        return selectors.proposal_get(proposal_id=proposal_id, viewer=request.auth)
    except Proposal.DoesNotExist:
        raise NotFound(f"No proposal with id {proposal_id}.") from None


@router.get("/proposals/", response={200: list[ProposalOut], **ERRORS})
def proposals_list(
    request: ApiRequest,
    page: Query[Page],
    status: Literal["draft", "open", "closed", "executed", "cancelled"] | None = None,
):
    proposals = selectors.proposal_list(viewer=request.auth, status=status, limit=page.limit, offset=page.offset)
    return [_proposal_out(p) for p in proposals]


@router.post("/proposals/", response={201: ProposalOut, **ERRORS})
@idempotent
def proposals_create(request: ApiRequest, payload: ProposalIn):
    proposal = services.proposal_create(proposer=request.auth, **payload.dict())
    return Status(201, _proposal_out(proposal))


@router.get("/proposals/{proposal_id}/", response={200: ProposalOut, **ERRORS})
def proposals_detail(request: ApiRequest, proposal_id: Path[Id]):
    return _proposal_out(_proposal(request, proposal_id))


@router.post("/proposals/{proposal_id}/open/", response={200: ProposalOut, **ERRORS})
def proposals_open(request: ApiRequest, proposal_id: Path[Id]):
    return _proposal_out(services.proposal_open(actor=request.auth, proposal_id=proposal_id))


@router.post("/proposals/{proposal_id}/close/", response={200: ProposalOut, **ERRORS})
def proposals_close(request: ApiRequest, proposal_id: Path[Id]):
    return _proposal_out(services.proposal_close_exclusive(actor=request.auth, proposal_id=proposal_id))


@router.post("/proposals/{proposal_id}/execute/", response={200: ProposalOut, **ERRORS})
def proposals_execute(request: ApiRequest, proposal_id: Path[Id]):
    return _proposal_out(services.proposal_execute_exclusive(actor=request.auth, proposal_id=proposal_id))


# --- votes -------------------------------------------------------------------------------------


class VoteIn(BodySchema):
    choice: Literal["for", "against", "abstain"]


class VoteOut(Schema):
    id: int
    proposal: int
    choice: str
    weight: Decimal
    created_at: datetime


def _vote_out(vote: Vote) -> dict:
    return {
        "id": vote.pk,
        "proposal": vote.proposal_id,
        "choice": vote.choice,
        "weight": vote.weight,
        "created_at": vote.created_at,
    }


@router.post("/proposals/{proposal_id}/votes/", response={201: VoteOut, **ERRORS})
@idempotent
def votes_create(request: ApiRequest, proposal_id: Path[Id], payload: VoteIn):
    vote = services.vote_cast(voter=request.auth, proposal_id=proposal_id, choice=payload.choice)
    return Status(201, _vote_out(vote))


# --- private sale ------------------------------------------------------------------------------


class SaleIn(BodySchema):
    name: str = Field("", max_length=200, pattern=NO_NUL)
    token_price: PositiveAmount
    allocation: PositiveAmount
    per_buyer_cap: PositiveAmount
    starts_at: DateTimeIn
    ends_at: DateTimeIn


class SaleOut(Schema):
    id: int
    name: str
    token_price: Decimal
    allocation: Decimal
    per_buyer_cap: Decimal
    sold: Decimal
    remaining: Decimal
    starts_at: datetime
    ends_at: datetime


def _sale_out(sale: Sale) -> dict:
    return {
        "id": sale.pk,
        "name": sale.name,
        "token_price": sale.token_price,
        "allocation": sale.allocation,
        "per_buyer_cap": sale.per_buyer_cap,
        "sold": sale.sold,
        "remaining": sale.remaining,
        "starts_at": sale.starts_at,
        "ends_at": sale.ends_at,
    }


@router.get("/sales/", response={200: list[SaleOut], **ERRORS})
def sales_list(request: ApiRequest, page: Query[Page]):
    return [_sale_out(s) for s in selectors.sale_list(limit=page.limit, offset=page.offset)]


@router.post("/sales/", response={201: SaleOut, **ERRORS})
@idempotent
def sales_create(request: ApiRequest, payload: SaleIn):
    return Status(201, _sale_out(services.sale_create(actor=request.auth, **payload.dict())))


class PurchaseIn(BodySchema):
    sale: Id
    wallet: str = Field(
        max_length=100, pattern=NO_NUL, description="EVM address: 0x and 40 hex digits (EIP-55 checked if mixed case)"
    )
    amount: PositiveAmount


class PurchaseOut(Schema):
    id: int
    sale: int
    wallet: str
    amount: Decimal
    tokens: Decimal
    # pending (reserved, awaiting payment) -> confirmed | failed | expired
    status: str
    created_at: datetime
    # Until when a pending purchase holds its tokens; null once settled.
    expires_at: datetime | None


def _purchase_out(purchase: Purchase) -> dict:
    return {
        "id": purchase.pk,
        "sale": purchase.sale_id,
        "wallet": purchase.wallet,
        "amount": purchase.amount,
        "tokens": purchase.tokens,
        "status": purchase.status,
        "created_at": purchase.created_at,
        "expires_at": purchase.expires_at if purchase.status == Purchase.Status.PENDING else None,
    }


@router.get("/purchases/", response={200: list[PurchaseOut], **ERRORS})
def purchases_list(request: ApiRequest, page: Query[Page]):
    return [_purchase_out(p) for p in selectors.purchase_list(buyer=request.auth, limit=page.limit, offset=page.offset)]


@router.post("/purchases/", response={201: PurchaseOut, **ERRORS})
@idempotent
def purchases_create(request: ApiRequest, payload: PurchaseIn):
    purchase = services.purchase_create(
        buyer=request.auth, sale_id=payload.sale, wallet=payload.wallet, amount=payload.amount
    )
    return Status(201, _purchase_out(purchase))


class PaymentWebhookIn(BodySchema):
    purchase: Id
    status: Literal["paid", "failed"]
    reference: str = Field(min_length=1, max_length=255, pattern=r"^[\x21-\x7e]+$")


class PaymentWebhookOut(Schema):
    purchase: int
    status: str
    # False when this payment had been applied already (a delivery repeated): nothing changed.
    changed: bool


_WEBHOOK_OPENAPI = {
    "parameters": [
        {
            "in": "header",
            "name": payments.HEADER,
            "required": True,
            "schema": {"type": "string", "maxLength": payments.MAX_HEADER_LENGTH},
            "description": 't=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">',
        }
    ],
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": PaymentWebhookIn.model_json_schema()}},
    },
}


@router.post(
    "/payments/webhook",
    auth=None,
    throttle=[],
    response={200: PaymentWebhookOut, **ERRORS},
    openapi_extra=_WEBHOOK_OPENAPI,
    summary="The payment processor's signed notification that a purchase was paid or failed",
)
def payments_webhook(request: HttpRequest):
    # The raw bytes are verified before anything reads them: an unsigned body is never parsed.
    # Limited by the signature, not by the anonymous rate: the processor may send bursts.
    payments.verify(request.body, request.headers.get(payments.HEADER))
    try:
        payload = PaymentWebhookIn.model_validate_json(request.body)
    except PydanticValidationError as exc:
        raise InvalidInput.of(
            {".".join(str(p) for p in error["loc"]) or "body": error["msg"] for error in exc.errors()}
        ) from None
    result = services.purchase_settle(
        purchase_id=payload.purchase, paid=payload.status == "paid", reference=payload.reference
    )
    return {"purchase": result.purchase.pk, "status": result.purchase.status, "changed": result.changed}


# --- token balance and staking -------------------------------------------------------------------


class BalanceOut(Schema):
    available: Decimal
    staked: Decimal
    pending: Decimal


@router.get("/balance/", response={200: BalanceOut, **ERRORS}, summary="The caller's tokens")
def balance_detail(request: ApiRequest):
    balance = selectors.balance_get(user=request.auth)
    return {"available": balance.available, "staked": balance.staked, "pending": balance.pending}


class StakeIn(BodySchema):
    amount: PositiveAmount
    lock_days: int = Field(ge=1, le=governance_settings.MAX_LOCK_DAYS)


class StakeOut(Schema):
    id: int
    amount: Decimal
    lock_days: int
    status: str
    started_at: datetime
    unlocks_at: datetime
    unstaked_at: datetime | None


def _stake_out(stake: StakingPosition) -> dict:
    return {
        "id": stake.pk,
        "amount": stake.amount,
        "lock_days": stake.lock_days,
        "status": stake.status,
        "started_at": stake.started_at,
        "unlocks_at": stake.unlocks_at,
        "unstaked_at": stake.unstaked_at,
    }


@router.get("/stakes/", response={200: list[StakeOut], **ERRORS})
def stakes_list(request: ApiRequest, page: Query[Page]):
    return [_stake_out(s) for s in selectors.stake_list(owner=request.auth, limit=page.limit, offset=page.offset)]


@router.post("/stakes/", response={201: StakeOut, **ERRORS})
@idempotent
def stakes_create(request: ApiRequest, payload: StakeIn):
    stake = services.stake_create(owner=request.auth, amount=payload.amount, lock_days=payload.lock_days)
    return Status(201, _stake_out(stake))


@router.post("/stakes/{stake_id}/unstake/", response={200: StakeOut, **ERRORS})
def stakes_unstake(request: ApiRequest, stake_id: Path[Id]):
    return _stake_out(services.stake_unstake(owner=request.auth, stake_id=stake_id))

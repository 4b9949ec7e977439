"""The vote written the conventional way, for bench/votes.py to compare ours with.

What a Django team would write without our design choices, with the same checks and the same
request and response as POST /api/proposals/{id}/votes/ (session cookie, CSRF header,
Idempotency-Key, JSON body; 201 with the vote, 409 for a second vote):

- Django's stock cache session engine (`django.contrib.sessions.backends.cache`): a GET to read
  the session, and on the way out, as every request slides the expiry, a GET to check it still
  exists and a SET. SESSION_ENGINE is one per settings, so this view swaps the store itself
  (`stock_cache_session`) before anything reads the session: the session middleware then saves
  that store exactly as Django's own does, in the same gunicorn as our vote.
- the Idempotency-Key looked up first (a stored response is replayed), and its row written with
  the ORM in the vote's transaction;
- `transaction.atomic()`, the proposal locked with `select_for_update()` (FOR UPDATE: votes on
  one proposal wait for each other), the stake summed with `aggregate(Sum(...))`,
  `Vote.objects.create`, the outbox event through `record_event`; the one-vote-per-voter
  constraint's IntegrityError is the 409.

It shares everything else with our vote, which only flatters it: the middleware, the compiled
user lookup (accounts/backends.py) and no django-ninja (JSON parsed and rendered by hand).
"""

import json
from decimal import Decimal
from functools import wraps

from django.conf import settings
from django.contrib import auth
from django.contrib.sessions.backends.cache import SessionStore
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from django.utils.functional import SimpleLazyObject
from django.views.decorators.http import require_POST

from governance.models import Proposal, StakingPosition, Vote
from lifecycle.idempotency.decorators import HEADER, REPLAYED_HEADER, request_fingerprint
from lifecycle.idempotency.models import IdempotencyRecord
from lifecycle.outbox.models import EventKind
from lifecycle.outbox.services import record_event


def stock_cache_session(view):
    """Run `view` with Django's stock cache session store (and the user read from it)."""

    @wraps(view)
    def wrapper(request: HttpRequest, *args, **kwargs) -> HttpResponse:
        request.session = SessionStore(request.COOKIES.get(settings.SESSION_COOKIE_NAME))
        request.user = SimpleLazyObject(lambda: auth.get_user(request))  # as AuthenticationMiddleware
        return view(request, *args, **kwargs)

    return wrapper


def _error(status: int, code: str, detail: str) -> JsonResponse:
    return JsonResponse({"error": code, "detail": detail, "fields": {}}, status=status)


@require_POST
@stock_cache_session
def conventional_vote(request: HttpRequest, proposal_id: int) -> HttpResponse:
    user = request.user
    if not user.is_authenticated:
        return _error(401, "unauthorized", "Authentication required.")
    try:
        choice = json.loads(request.body)["choice"]
    except (ValueError, TypeError, KeyError):
        return _error(422, "invalid", "Send a JSON object with a `choice`.")
    if choice not in Vote.Choice.values:
        return _error(422, "invalid", f"choice: Must be one of {', '.join(Vote.Choice.values)}.")

    key = request.headers.get(HEADER)
    if key:
        record = IdempotencyRecord.objects.filter(user=user, key=key).first()
        if record is not None:
            if record.request_hash != request_fingerprint(request):
                return _error(422, "idempotency_key_reused", f"This {HEADER} was already used with another request.")
            response = HttpResponse(
                record.response_body, status=record.response_status, content_type=record.response_content_type
            )
            response[REPLAYED_HEADER] = "true"
            return response

    try:
        with transaction.atomic():
            proposal = Proposal.objects.select_for_update().filter(pk=proposal_id).first()
            if proposal is None:
                return _error(404, "not_found", f"No proposal with id {proposal_id}.")
            now = timezone.now()
            if proposal.status != Proposal.Status.OPEN:
                return _error(409, "proposal_not_open", f"Proposal {proposal_id} is {proposal.status}.")
            if now < proposal.voting_starts_at:
                return _error(409, "voting_not_started", f"Voting on proposal {proposal_id} has not started.")
            if now >= proposal.voting_ends_at:
                return _error(409, "voting_ended", f"Voting on proposal {proposal_id} has ended.")
            weight = StakingPosition.objects.filter(owner=user, status=StakingPosition.Status.ACTIVE).aggregate(
                total=Sum("amount")
            )["total"] or Decimal(0)
            if weight <= 0:
                return _error(403, "no_stake", "You have no active stake.")
            vote = Vote.objects.create(proposal=proposal, voter=user, choice=choice, weight=weight)
            record_event(
                kind=EventKind.GOVERNANCE_EVENT,
                payload={
                    "action": "vote_cast",
                    "proposal_id": proposal.pk,
                    "voter_id": user.pk,
                    "choice": choice,
                    "vote_id": vote.pk,
                    "weight": str(weight),
                },
            )
            response = JsonResponse(
                {
                    "id": vote.pk,
                    "proposal": proposal.pk,
                    "choice": vote.choice,
                    "weight": vote.weight,
                    "created_at": vote.created_at,
                },
                status=201,
            )
            if key:
                IdempotencyRecord.objects.create(
                    user=user,
                    key=key,
                    request_hash=request_fingerprint(request),
                    method=request.method,
                    path=request.path[:500],
                    response_status=response.status_code,
                    response_body=response.content.decode(),
                    response_content_type=response["Content-Type"],
                )
            return response
    except IntegrityError:
        return _error(409, "already_voted", f"You have already voted on proposal {proposal_id}.")

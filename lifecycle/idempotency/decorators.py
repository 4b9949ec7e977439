"""Idempotency-Key for creating POSTs: a retried request gets the first response, one effect.

Usage, on any django-ninja operation that creates something (below the route decorator)::

    @router.post("/purchases/", response={201: PurchaseOut, ...})
    @idempotent
    def purchase_create_view(request, payload: PurchaseIn): ...

Without the header the operation runs as if undecorated (its services keep their own
transactions). With it, and this is how it holds when instances die, the view runs inside one
transaction whose last statement INSERTs the key row with the rendered response (ON CONFLICT DO
NOTHING). So either the effect and its stored response are both committed, or neither is:

- retry after the first instance died after COMMIT: the view runs again inside the transaction,
  the key's INSERT finds the committed row (or the view itself refuses, "already voted") -> the
  transaction is rolled back and the stored response is answered: one effect;
- retry after it died before COMMIT: PostgreSQL rolled both back -> the retry runs normally;
- two requests with one key at once: the second's INSERT (or an earlier write on the same row)
  waits for the first's COMMIT, then it is rolled back and replays the first's response;
- the same key with a different method, path or body -> 422 (the client reused a key by mistake).

Claiming the key last, not first, costs a retry the view's work (rolled back), and saves every
first request a statement: retries are rare, first requests are all the traffic.

Error responses (4xx) are not stored: their transaction is rolled back with the key, so a retry
re-evaluates (a sold-out sale may have room again), and nothing is half-written.
"""

import hashlib
import inspect
import json
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import wraps
from typing import Any

from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.utils import timezone
from ninja import Header
from ninja.decorators import decorate_view
from ninja.utils import contribute_operation_args

from core.errors import InvalidInput, error_body
from lifecycle.idempotency.conf import idempotency_settings
from lifecycle.idempotency.metrics import IDEMPOTENT_REPLAYS

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces
_ATTR = "_idempotency_claim"


def request_fingerprint(request: HttpRequest) -> str:
    """SHA-256 of method, path and the body (JSON canonicalised: key order and spacing ignored)."""
    body = request.body
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    digest = hashlib.sha256()
    # A request Django routed to a view always has its method (None only on a bare HttpRequest()).
    for part in ((request.method or "").encode(), request.path.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


@dataclass(frozen=True, slots=True)
class _Claim:
    """What a keyed request will store: whose key, which key, and the request it was used for."""

    user_id: int
    key: str
    request_hash: str


def _record(*, claim: _Claim, request: HttpRequest, response: HttpResponse) -> bool:
    """INSERT the key row with the response; False when a committed row for (user, key) exists.

    Last statement of the effect's transaction: a twin request holding the same key uncommitted
    makes this INSERT wait until the twin commits (-> False) or rolls back (-> True).
    """
    from lifecycle.idempotency.models import IdempotencyRecord

    table = connection.ops.quote_name(IdempotencyRecord._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (user_id, key, request_hash, method, path, response_status, response_body, "
            "response_content_type, created_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s) "
            "ON CONFLICT (user_id, key) DO NOTHING RETURNING id",
            [
                claim.user_id,
                claim.key,
                claim.request_hash,
                request.method,
                request.path[:500],
                response.status_code,
                response.content.decode(response.charset or "utf-8"),
                response.get("Content-Type", "application/json"),
                timezone.now(),
            ],
        )
        return cursor.fetchone() is not None


def _stored_response(claim: _Claim) -> HttpResponse | None:
    """The committed response for this key, a 422 if the key was used for another request, or None."""
    from lifecycle.idempotency.models import IdempotencyRecord

    record = IdempotencyRecord.objects.filter(user_id=claim.user_id, key=claim.key).first()
    if record is None:
        return None
    if record.request_hash != claim.request_hash:
        IDEMPOTENT_REPLAYS.labels(outcome="key_reused").inc()
        detail = (
            f"This {HEADER} was already used with a different request (method, path or body). "
            "Use a new key for a new request."
        )
        return JsonResponse(
            error_body(422, detail, code="idempotency_key_reused", fields={HEADER: [detail]}), status=422
        )
    response = HttpResponse(
        record.response_body, status=record.response_status, content_type=record.response_content_type
    )
    response[REPLAYED_HEADER] = "true"
    IDEMPOTENT_REPLAYS.labels(outcome="replayed").inc()
    return response


def _user_id(request: HttpRequest) -> int | None:
    user = getattr(request, "auth", None) or getattr(request, "user", None)
    if user is None or not getattr(user, "is_authenticated", False):
        return None
    return user.pk


def _run_in_transaction(run: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Wraps the whole operation (auth, validation, view, rendering) in the effect's transaction."""

    @wraps(run)
    def wrapper(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        if not request.headers.get(HEADER):
            # No key, nothing to store with the effect: the view's services keep their own
            # transactions, and a one-statement write needs no BEGIN and COMMIT around it.
            return run(request, *args, **kwargs)
        try:
            with transaction.atomic():
                response = run(request, *args, **kwargs)
                claim: _Claim | None = getattr(request, _ATTR, None)
                if claim is None:
                    return response
                if 200 <= response.status_code < 300 and _record(claim=claim, request=request, response=response):
                    pause = idempotency_settings.PAUSE_AFTER_COMMIT
                    if pause:
                        # Tests only: hold the response after COMMIT so a test can kill the
                        # instance in exactly the window this module exists for.
                        transaction.on_commit(lambda: time.sleep(pause))
                    return response
                # An error, or a twin request committed this key first: discard everything the
                # view wrote, then answer what the key already holds, if anything.
                transaction.set_rollback(True)
        except Exception:
            # Often the twin's doing (a unique row it committed first): the stored response, if any.
            replay = _stored_response_or_none(getattr(request, _ATTR, None))
            if replay is None:
                raise
            return replay
        return _stored_response(claim) or response

    return wrapper


def _stored_response_or_none(claim: _Claim | None) -> HttpResponse | None:
    if claim is None:
        return None
    try:
        return _stored_response(claim)
    except Exception:  # the original error is the one to report
        return None


def idempotent(view: Callable[..., Any]) -> Callable[..., Any]:
    """Make a django-ninja creating POST honour the Idempotency-Key header (see module doc)."""
    if inspect.iscoroutinefunction(view):
        # The key, the effect and the stored response share one synchronous DB transaction.
        raise TypeError(f"@idempotent supports sync views only; {view.__qualname__} is async.")

    @wraps(view)
    def wrapper(request: HttpRequest, *args: Any, idempotency_key: str | None = None, **kwargs: Any) -> Any:
        user_id = _user_id(request)
        if idempotency_key is None or user_id is None:
            return view(request, *args, **kwargs)
        if not _KEY_RE.match(idempotency_key):
            detail = f"{HEADER} must be 1 to 255 printable ASCII characters without spaces."
            raise InvalidInput(detail, fields={HEADER: [detail]})
        setattr(request, _ATTR, _Claim(user_id, idempotency_key, request_fingerprint(request)))
        return view(request, *args, **kwargs)

    contribute_operation_args(
        wrapper,
        "idempotency_key",
        # ninja annotates the argument as a class, yet uses it as any annotation (here a union).
        str | None,  # type: ignore[arg-type]
        Header(
            None,
            alias=HEADER,
            description="Retrying with the same key and body returns the first response and creates nothing more.",
        ),
    )
    return decorate_view(_run_in_transaction)(wrapper)


def idempotency_effect_token(request: HttpRequest) -> str | None:
    """A stable name for this request's Idempotency-Key (per user and path), or None without one.

    A write to Redis cannot join the key's PostgreSQL transaction, and a retry (or a twin sent
    at the same time) runs the view again before its key INSERT finds the first's row. Such a
    write records its result under this token in the same Redis script (SET NX), so the retry
    finds the first result instead of writing a second time.
    """
    key = request.headers.get(HEADER)
    user = getattr(request, "auth", None) or getattr(request, "user", None)
    if not key or user is None or not user.is_authenticated:
        return None
    digest = hashlib.sha256(f"{request.path}\n{key}".encode()).hexdigest()[:32]
    return f"{user.pk}:{digest}"

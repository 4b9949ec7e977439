"""Idempotency-Key for creating POSTs: a retried request gets the first response, one effect.

Usage, on any django-ninja operation that creates something (below the route decorator)::

    @router.post("/purchases/", response={201: PurchaseOut, ...})
    @idempotent
    def purchase_create_view(request, payload: PurchaseIn): ...

How it holds when instances die: the key row is INSERTed (ON CONFLICT DO NOTHING) in the same
transaction as the effect, before the view runs, and the rendered response is written to it
before COMMIT. So either the effect and its stored response are both committed, or neither is:

- retry after the first instance died after COMMIT: the row is there -> its response, no effect;
- retry after it died before COMMIT: PostgreSQL rolled both back -> the retry runs normally;
- two requests with one key at once: the second INSERT waits on the first's uncommitted unique
  index entry, then finds the committed row (-> replay) or none (first rolled back -> it runs);
- the same key with a different method, path or body -> 422 (the client reused a key by mistake).

Error responses (4xx) are not stored: their transaction is rolled back with the key, so a retry
re-evaluates (a sold-out sale may have room again), and nothing is half-written.
"""

import hashlib
import inspect
import json
import re
import time
from collections.abc import Callable
from datetime import timedelta
from functools import wraps
from typing import Any

from django.db import connection, transaction
from django.http import HttpRequest, HttpResponse
from django.utils import timezone
from ninja import Header
from ninja.decorators import decorate_view
from ninja.utils import contribute_operation_args

from lifecycle.idempotency.conf import idempotency_settings
from omk.errors import InvalidInput, ServiceError

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
_KEY_RE = re.compile(r"^[\x21-\x7e]{1,255}$")  # printable ASCII, no spaces
_ATTR = "_idempotency_claim"


class KeyInUse(ServiceError):
    status = 409
    code = "idempotency_key_in_use"


def request_fingerprint(request: HttpRequest) -> str:
    """SHA-256 of method, path and the body (JSON canonicalised: key order and spacing ignored)."""
    body = request.body
    try:
        canonical = json.dumps(json.loads(body), sort_keys=True, separators=(",", ":")).encode()
    except ValueError:
        canonical = body
    digest = hashlib.sha256()
    for part in (request.method.encode(), request.path.encode(), canonical):
        digest.update(len(part).to_bytes(8, "big"))
        digest.update(part)
    return digest.hexdigest()


def _claim(*, user_id: int, key: str, request_hash: str, request: HttpRequest) -> int | None:
    """INSERT the key row; its id, or None when a committed row for (user, key) already exists."""
    from lifecycle.idempotency.models import IdempotencyRecord

    table = connection.ops.quote_name(IdempotencyRecord._meta.db_table)
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {table} (user_id, key, request_hash, method, path, response_body, "
            "response_content_type, created_at) VALUES (%s, %s, %s, %s, %s, '', '', %s) "
            "ON CONFLICT (user_id, key) DO NOTHING RETURNING id",
            [user_id, key, request_hash, request.method, request.path[:500], timezone.now()],
        )
        row = cursor.fetchone()
    return row[0] if row else None


def _replay(*, user_id: int, key: str, request_hash: str) -> HttpResponse:
    from lifecycle.idempotency.models import IdempotencyRecord

    record = IdempotencyRecord.objects.get(user_id=user_id, key=key)
    if record.request_hash != request_hash:
        detail = (
            f"This {HEADER} was already used with a different request (method, path or body). "
            "Use a new key for a new request."
        )
        raise InvalidInput(detail, code="idempotency_key_reused", fields={HEADER: [detail]})
    if record.response_status is None:  # defensive: rows are only committed with a response
        raise KeyInUse(f"A request with this {HEADER} is still being processed; retry shortly.")
    response = HttpResponse(
        record.response_body, status=record.response_status, content_type=record.response_content_type
    )
    response[REPLAYED_HEADER] = "true"
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
        with transaction.atomic():
            response = run(request, *args, **kwargs)
            claim_id = getattr(request, _ATTR, None)
            if claim_id is None:
                return response
            if 200 <= response.status_code < 300:
                from lifecycle.idempotency.models import IdempotencyRecord

                pause = idempotency_settings.PAUSE_AFTER_COMMIT
                if pause:
                    # Tests only: hold the response after COMMIT so a test can kill the instance
                    # in exactly the window this module exists for.
                    transaction.on_commit(lambda: time.sleep(pause))

                IdempotencyRecord.objects.filter(pk=claim_id).update(
                    response_status=response.status_code,
                    response_body=response.content.decode(response.charset or "utf-8"),
                    response_content_type=response.get("Content-Type", "application/json"),
                )
            else:
                # The error response is returned as is; the key (and anything the view wrote
                # before failing) is discarded, so a retry starts afresh.
                transaction.set_rollback(True)
            return response

    return wrapper


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
        request_hash = request_fingerprint(request)
        claim_id = _claim(user_id=user_id, key=idempotency_key, request_hash=request_hash, request=request)
        if claim_id is None:
            return _replay(user_id=user_id, key=idempotency_key, request_hash=request_hash)
        setattr(request, _ATTR, claim_id)
        return view(request, *args, **kwargs)

    contribute_operation_args(
        wrapper,
        "idempotency_key",
        str | None,
        Header(
            None,
            alias=HEADER,
            description="Retrying with the same key and body returns the first response and creates nothing more.",
        ),
    )
    return decorate_view(_run_in_transaction)(wrapper)


def idempotency_purge(*, older_than: timedelta) -> int:
    """Delete keys older than `older_than` (clients retry within minutes, not days)."""
    from lifecycle.idempotency.models import IdempotencyRecord

    deleted, _ = IdempotencyRecord.objects.filter(created_at__lt=timezone.now() - older_than).delete()
    return deleted


def idempotency_effect_token(request: HttpRequest) -> str | None:
    """A stable name for this request's Idempotency-Key (per user and path), or None without one.

    A write to Redis cannot join the key's PostgreSQL transaction: if the instance dies after
    the Redis write and before COMMIT, the client's retry runs the view again. Such a write
    records its result under this token in the same Redis script (SET NX), so the retry finds
    the first result instead of writing a second time.
    """
    key = request.headers.get(HEADER)
    user = getattr(request, "auth", None) or getattr(request, "user", None)
    if not key or user is None or not user.is_authenticated:
        return None
    digest = hashlib.sha256(f"{request.path}\n{key}".encode()).hexdigest()[:32]
    return f"{user.pk}:{digest}"

"""Writes to the outbox (HackSoft services): recording events, retrying and pruning rows."""

import datetime as dt
import json
import re
import uuid

from django.db import connection, transaction
from django.utils import timezone

from lifecycle.outbox.conf import outbox_settings
from lifecycle.outbox.models import KIND_TABLES, OutboxEvent, StrictJSONEncoder

KINDS = frozenset(KIND_TABLES)
# \u0000 as JSON writes it, not preceded by an escaped backslash (that would be the text "\u0000").
_ESCAPED_NUL = re.compile(r"(?<!\\)(?:\\\\)*\\u0000")
_INSERT_SQL = (
    f"INSERT INTO {OutboxEvent._meta.db_table} (id, kind, payload, created_at, attempts, last_error) "
    "VALUES (%s, %s, %s::jsonb, %s, 0, '')"
)


def record_event(*, kind: str, payload: dict) -> uuid.UUID:
    """Write an analytics event in the caller's transaction and return its event id.

    No `atomic` of its own on purpose: the row commits or rolls back with the change that caused
    it, so an event exists if and only if that change does.
    """
    if kind not in KINDS:
        raise ValueError(f"kind: unknown event kind {kind!r}; expected one of {', '.join(sorted(KINDS))}.")
    if not isinstance(payload, dict):
        raise ValueError(f"payload: must be a dict, got {type(payload).__name__}.")
    try:
        # Encoded here, before any SQL, so bad input raises without touching the caller's
        # transaction (a failing Model.save() would mark it for rollback).
        encoded = json.dumps(payload, cls=StrictJSONEncoder, separators=(",", ":"))
    except TypeError as exc:
        raise ValueError(f"payload: not JSON-serializable ({exc}).") from exc
    except ValueError as exc:
        raise ValueError(f"payload: {exc}.") from exc
    if "\\u0000" in encoded and _ESCAPED_NUL.search(encoded):
        # PostgreSQL's jsonb cannot hold NUL: the INSERT would fail and abort the caller's transaction.
        raise ValueError("payload: contains a NUL character (\\u0000), which PostgreSQL cannot store.")
    event_id = uuid.uuid4()
    # One plain INSERT: this runs inside user requests, and the ORM's save() would encode the
    # payload a second time and add its own bookkeeping for nothing.
    with connection.cursor() as cursor:
        cursor.execute(_INSERT_SQL, [event_id, kind, encoded, timezone.now()])
    return event_id


def outbox_retry_quarantined(*, event_ids: list[uuid.UUID] | None = None) -> int:
    """Put quarantined rows back in the queue (after the cause, e.g. a schema, was fixed)."""
    rows = OutboxEvent.objects.filter(quarantined_at__isnull=False, exported_at__isnull=True)
    if event_ids is not None:
        rows = rows.filter(id__in=event_ids)
    with transaction.atomic():
        return rows.update(quarantined_at=None, attempts=0, next_attempt_at=None)


def outbox_prune(*, older_than: dt.timedelta | None = None, batch_size: int = 5000) -> int:
    """Delete rows exported longer than the retention ago, in short batches (no long locks)."""
    if older_than is None:
        older_than = dt.timedelta(days=outbox_settings.RETENTION_DAYS)
    cutoff = timezone.now() - older_than
    deleted = 0
    while True:
        with transaction.atomic():
            ids = list(
                OutboxEvent.objects.filter(exported_at__lt=cutoff)
                .select_for_update(skip_locked=True)
                .values_list("id", flat=True)[:batch_size]
            )
            if not ids:
                return deleted
            deleted += OutboxEvent.objects.filter(id__in=ids).delete()[0]

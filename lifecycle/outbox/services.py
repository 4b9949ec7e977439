"""Writes to the outbox (HackSoft services): recording events, retrying and pruning rows."""

import datetime as dt
import uuid

from django.db import connection, transaction
from django.utils import timezone

from lifecycle.outbox.conf import outbox_settings
from lifecycle.outbox.models import OutboxEvent
from lifecycle.outbox.queries import event_insert


def record_event(*, kind: str, payload: dict) -> uuid.UUID:
    """Write an analytics event in the caller's transaction and return its event id.

    No `atomic` of its own on purpose: the row commits or rolls back with the change that caused
    it, so an event exists if and only if that change does. Bad input (an unknown kind, a payload
    JSON or PostgreSQL cannot hold) raises ValueError before any SQL, leaving the caller's
    transaction untouched. The INSERT is the one `event_insert` builds for other apps' statements.
    """
    event = event_insert(kind=kind, payload=payload)
    with connection.cursor() as cursor:
        cursor.execute(event.sql, event.params)
    return event.event_id


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

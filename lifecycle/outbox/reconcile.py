"""Events the outbox marked exported that a BigQuery table does not hold, exported again.

What `bigquery_setup` runs after rebuilding a table into the layout: an exporter that wrote into
the former table between its backup copy and its replacement had its rows marked exported, and
they are not in the new table. The outbox keeps exported rows `RETENTION_DAYS`, so they are found
here and sent again; the table is asked which it holds, so nothing is sent twice.
"""

from __future__ import annotations

import datetime as dt
import time
import uuid

from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from lifecycle.outbox.conf import outbox_settings
from lifecycle.outbox.models import KIND_TABLES, OutboxEvent
from lifecycle.outbox.sinks import Event

CHUNK = 10_000


def _kind_of(table: str) -> str:
    return next(kind for kind, name in KIND_TABLES.items() if name == table)


def outbox_wait_for_staged(*, table: str, before: dt.datetime, timeout: float) -> int:
    """Wait (at most `timeout` s) until no event of `table` staged before `before` is still
    unmarked: those are the batches in flight when the table was replaced. Returns how many are
    left (settled later by recovery, after which `outbox_reexport_missing` finds them)."""
    deadline = time.monotonic() + timeout
    while True:
        left = (
            OutboxEvent.objects.filter(kind=_kind_of(table), exported_at__isnull=True, staged_at__lt=before)
            .exclude(stream="")
            .count()
        )
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.5)


def outbox_reexport_missing(*, sink, table: str, since: dt.datetime, timeout: float | None = None) -> int:
    """Put back in the queue the events of `table` marked exported since `since` that the table
    does not hold; returns how many. `sink` answers `present(table_id, events)`."""
    timeout = timeout or outbox_settings.BIGQUERY_TIMEOUT_SECONDS
    table_id = f"{sink.dataset_id}.{table}"
    requeued = 0
    last: tuple[dt.datetime | None, uuid.UUID] | None = None
    while True:
        rows = OutboxEvent.objects.filter(kind=_kind_of(table), exported_at__gte=since)
        if last is not None:
            rows = rows.filter(Q(exported_at__gt=last[0]) | Q(exported_at=last[0], id__gt=last[1]))
        chunk = list(
            rows.order_by("exported_at", "id").values_list("id", "kind", "payload", "created_at", "exported_at")[:CHUNK]
        )
        if not chunk:
            return requeued
        last = (chunk[-1][4], chunk[-1][0])
        events = [Event(event_id=row[0], kind=row[1], table=table, payload=row[2], created_at=row[3]) for row in chunk]
        present = sink.present(table_id, events, timeout=timeout)
        missing = [event.event_id for event in events if event.event_id not in present]
        if missing:
            with transaction.atomic():
                requeued += OutboxEvent.objects.filter(id__in=missing, exported_at__isnull=False).update(
                    exported_at=None, stream="", staged_at=None, attempts=0, next_attempt_at=None, last_error=""
                )
        if len(chunk) < CHUNK:
            return requeued


def rebuild_margin(started: dt.datetime) -> dt.datetime:
    """The rebuild's start, less a margin for the clocks of the instances that marked rows."""
    return min(started, timezone.now()) - dt.timedelta(minutes=5)

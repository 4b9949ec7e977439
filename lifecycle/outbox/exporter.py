"""The exporter: pending outbox rows -> the sink, each event once in what users query.

Several exporters (every worker process of every instance, and each instance once more at
shutdown) run at the same time: each takes a batch with `SELECT ... FOR UPDATE SKIP LOCKED`, so
they never take the same rows, and holds the rows' locks while it sends them. Rows are marked
exported in that same transaction after the sink accepted them. If the exporter dies after the
send and before the commit, the rows are unlocked as pending and sent again by the next one; the
sink's `send` is idempotent per event id (the BigQuery sink MERGEs on event_id), so the event is
still there once.
"""

from __future__ import annotations

import logging
import os
import random
import threading
import time
import uuid
from collections import Counter as Tally
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path

from django.core.signals import setting_changed
from django.db import DatabaseError, connection, transaction
from django.db.models import F, Q
from django.utils import timezone
from django.utils.module_loading import import_string

from core.connections import connections_close
from lifecycle.outbox import metrics
from lifecycle.outbox.conf import outbox_settings
from lifecycle.outbox.models import KIND_TABLES, OutboxEvent
from lifecycle.outbox.selectors import PENDING, outbox_stats
from lifecycle.outbox.services import outbox_prune
from lifecycle.outbox.sinks import Event, OutboxSink, RowsRejected, SinkError

logger = logging.getLogger(__name__)

# Test-only: a file path. When set, the exporter writes its pid there after the sink accepted a
# batch and before it marks the rows exported, then waits, so a test can SIGKILL it right there.
PAUSE_AFTER_SEND_ENV = "OUTBOX_TEST_PAUSE_AFTER_SEND"

_sink: OutboxSink | None = None
_sink_lock = threading.Lock()


def get_sink() -> OutboxSink:
    """The process's sink (one, so the BigQuery client and its connection pool are reused)."""
    global _sink
    with _sink_lock:
        if _sink is None:
            _sink = import_string(outbox_settings.SINK)()
        return _sink


def reset_sink(**kwargs) -> None:
    global _sink
    if kwargs.get("setting", "OUTBOX_").startswith("OUTBOX_"):
        with _sink_lock:
            if _sink is not None:
                _sink.close()
            _sink = None


setting_changed.connect(reset_sink)


@dataclass(frozen=True)
class BatchResult:
    selected: int
    exported: int
    rejected: int
    failed: bool


def _send_isolating(sink: OutboxSink, events: Sequence[Event], timeout: float | None) -> dict[uuid.UUID, str]:
    """Send events; return those the sink rejected (id -> error). The others are in the sink.

    A rejected batch is split in halves until each bad event is alone, so one bad row costs
    about 2*log2(batch) sends and never holds the good ones back.
    """
    try:
        sink.send(events, timeout=timeout)
        return {}
    except RowsRejected as exc:
        if exc.errors:
            rejected = {event_id: error for event_id, error in exc.errors.items()}
            rest = [event for event in events if event.event_id not in rejected]
            if rest:
                rejected.update(_send_isolating(sink, rest, timeout))
            return rejected
        if len(events) == 1:
            return {events[0].event_id: str(exc)}
        middle = len(events) // 2
        return {**_send_isolating(sink, events[:middle], timeout), **_send_isolating(sink, events[middle:], timeout)}


def _backoff(attempts: int) -> timedelta:
    delay = min(outbox_settings.BACKOFF_MAX_SECONDS, outbox_settings.BACKOFF_BASE_SECONDS * 2 ** (attempts - 1))
    # Jitter spreads the retries of many instances after a shared outage.
    return timedelta(seconds=delay * random.uniform(0.8, 1.2))


def _pause_for_tests() -> None:
    path = os.environ.get(PAUSE_AFTER_SEND_ENV)
    if path:
        Path(path).write_text(str(os.getpid()))
        time.sleep(120)


def outbox_export_batch(*, sink: OutboxSink, batch_size: int, timeout: float | None = None) -> BatchResult:
    with transaction.atomic():
        rows = list(
            OutboxEvent.objects.select_for_update(skip_locked=True)
            .filter(PENDING)
            .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=timezone.now()))
            .order_by("created_at")
            .values_list("id", "kind", "payload", "created_at", "attempts")[:batch_size]
        )
        if not rows:
            return BatchResult(selected=0, exported=0, rejected=0, failed=False)
        events = [
            Event(event_id=row[0], kind=row[1], table=KIND_TABLES[row[1]], payload=row[2], created_at=row[3])
            for row in rows
        ]
        try:
            rejected = _send_isolating(sink, events, timeout)
        except SinkError as exc:
            attempts = max(row[4] for row in rows) + 1
            OutboxEvent.objects.filter(id__in=[row[0] for row in rows]).update(
                attempts=F("attempts") + 1,
                next_attempt_at=timezone.now() + _backoff(attempts),
                last_error=str(exc)[:2000],
            )
            metrics.OUTBOX_EXPORT_FAILURES.labels(reason="batch").inc()
            logger.warning(
                "outbox export of %d events failed (attempt %d), retrying later: %s", len(rows), attempts, exc
            )
            return BatchResult(selected=len(rows), exported=0, rejected=0, failed=True)

        _pause_for_tests()
        now = timezone.now()
        exported = [event for event in events if event.event_id not in rejected]
        if exported:
            # One array parameter, not an IN list of thousands of placeholders to parse.
            with connection.cursor() as cursor:
                cursor.execute(
                    f"UPDATE {OutboxEvent._meta.db_table} SET exported_at = %s, next_attempt_at = NULL "
                    "WHERE id = ANY(%s)",
                    [now, [event.event_id for event in exported]],
                )
        for event_id, error in rejected.items():
            OutboxEvent.objects.filter(id=event_id).update(
                quarantined_at=now, attempts=F("attempts") + 1, last_error=error[:4000]
            )
    for kind, count in Tally(event.kind for event in exported).items():
        metrics.OUTBOX_EXPORTED.labels(kind=kind).inc(count)
    if rejected:
        metrics.OUTBOX_EXPORT_FAILURES.labels(reason="rejected").inc(len(rejected))
        logger.error("outbox: %d event(s) rejected by the sink and quarantined: %s", len(rejected), rejected)
    return BatchResult(selected=len(rows), exported=len(exported), rejected=len(rejected), failed=False)


def outbox_refresh_metrics() -> None:
    stats = outbox_stats()
    metrics.OUTBOX_PENDING.set(stats.pending)
    metrics.OUTBOX_QUARANTINED.set(stats.quarantined)
    metrics.OUTBOX_OLDEST_PENDING_SECONDS.set(stats.oldest_pending_seconds)


def outbox_export(*, max_seconds: float, batch_size: int = 500) -> int:
    """Export pending events for at most about `max_seconds` (the shutdown step's budget).

    Returns the number of events exported. Stops early when nothing is left (or the sink is
    failing: those rows wait for their backoff). A batch started before the deadline is
    finished; an exporter killed mid-batch loses nothing (see the module docstring).
    """
    if max_seconds <= 0:
        # The shutdown step may be called with nothing left of its budget: touch nothing.
        return 0
    deadline = time.monotonic() + max_seconds
    sink = get_sink()
    total = 0
    while time.monotonic() < deadline:
        # At least a few seconds per batch: a batch cut short is sent again whole next time.
        timeout = max(2.0, deadline - time.monotonic())
        result = outbox_export_batch(sink=sink, batch_size=batch_size, timeout=timeout)
        total += result.exported
        if result.failed or result.selected < batch_size:
            break
    outbox_refresh_metrics()
    return total


def outbox_export_loop(
    *,
    stop: threading.Event | None = None,
    batch_size: int | None = None,
    poll_interval: float | None = None,
    prune_interval: float = 3600.0,
) -> None:
    """Export continuously until `stop` is set (the background worker runs this).

    Sleeps `poll_interval` when there was nothing to export; prunes exported rows older than
    the retention once per `prune_interval`. A database outage is logged and waited out.
    """
    stop = stop or threading.Event()
    batch_size = batch_size or outbox_settings.BATCH_SIZE
    poll_interval = poll_interval if poll_interval is not None else outbox_settings.POLL_INTERVAL_SECONDS
    next_prune = time.monotonic()
    failures = 0
    try:
        while not stop.is_set():
            try:
                exported = outbox_export(max_seconds=10.0, batch_size=batch_size)
                if time.monotonic() >= next_prune:
                    pruned = outbox_prune()
                    if pruned:
                        logger.info("outbox: pruned %d exported events", pruned)
                    next_prune = time.monotonic() + prune_interval
                failures = 0
            except DatabaseError as exc:
                failures += 1
                exported = 0
                logger.warning("outbox exporter: database unavailable (%s), retrying", exc)
                connections_close(pools=False, redis=False)
            except Exception:
                # Whatever it is, the rows are safe in PostgreSQL: keep the loop alive, slower.
                failures += 1
                exported = 0
                logger.exception("outbox exporter: unexpected error, retrying")
            if exported == 0:
                stop.wait(min(30.0, poll_interval * 2 ** min(failures, 5)))
    finally:
        connections_close(pools=False, redis=False)

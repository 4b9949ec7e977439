"""The exporter: pending outbox rows -> the sink, each event once in what users query.

Several exporters (every worker process of every instance, and each instance once more at
shutdown) run at the same time: each takes a batch with `SELECT ... FOR UPDATE SKIP LOCKED`, so
they never take the same rows. A batch goes in two phases, each a PostgreSQL transaction:

1. with the rows locked, the sink stages them (BigQuery: a PENDING stream per table, rows
   appended, stream finalized: nothing visible yet), and the stream names are written on the
   rows (`stream`, `staged_at`); commit.
2. the sink commits the streams (visible, atomically, once); the rows are marked exported.

A crash before 1 commits leaves the rows pending: the staged streams are never committed and
BigQuery drops them. A crash between the two leaves rows staged and unmarked: after
`RECOVER_AFTER_SECONDS` any exporter takes them (`outbox_recover`), asks the sink what became of
the stream (committed: mark them; committable: commit it, mark them; gone: ask the table which
events it holds, mark those, stage the rest again). A stream is committed at most once however
many exporters try, so every event is in BigQuery once.
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
from lifecycle.outbox.sinks import Event, OutboxSink, RowsRejected, SinkError, Staged

logger = logging.getLogger(__name__)

# Test-only: a file path. When set, the exporter writes its pid there after the sink committed a
# batch and before it marks the rows exported, then waits, so a test can SIGKILL it right there.
PAUSE_AFTER_SEND_ENV = "OUTBOX_TEST_PAUSE_AFTER_SEND"
# Test-only, the same after the streams are recorded in PostgreSQL and before they are committed.
PAUSE_BEFORE_COMMIT_ENV = "OUTBOX_TEST_PAUSE_BEFORE_COMMIT"
# The columns a batch is read with, in the order `_events` takes them.
EVENT_COLUMNS = ("id", "kind", "payload", "created_at", "attempts")
TABLE = OutboxEvent._meta.db_table

_sink: OutboxSink | None = None
_sink_lock = threading.Lock()


def get_sink() -> OutboxSink:
    """The process's sink (one, so the BigQuery clients and their connections are reused)."""
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
    # The batch was smaller than the batch size and too young (BATCH_LINGER_SECONDS): left for later.
    lingering: bool = False


def _events(rows: Sequence[tuple]) -> list[Event]:
    return [
        Event(event_id=row[0], kind=row[1], table=KIND_TABLES[row[1]], payload=row[2], created_at=row[3])
        for row in rows
    ]


def _stage_isolating(
    sink: OutboxSink, events: Sequence[Event], timeout: float | None
) -> tuple[list[Staged], dict[uuid.UUID, str]]:
    """Stage events; return what was staged and the events the sink rejected (id -> error).

    A rejection that does not name its rows splits the batch in halves until each bad event is
    alone, so one bad row costs about 2*log2(batch) stagings and never holds the good ones back.
    """
    try:
        return sink.stage(events, timeout=timeout), {}
    except RowsRejected as exc:
        if exc.errors:
            rejected = dict(exc.errors)
            rest = [event for event in events if event.event_id not in rejected]
            staged: list[Staged] = []
            if rest:
                staged, more = _stage_isolating(sink, rest, timeout)
                rejected.update(more)
            return staged, rejected
        if len(events) == 1:
            return [], {events[0].event_id: str(exc)}
        middle = len(events) // 2
        first, first_rejected = _stage_isolating(sink, events[:middle], timeout)
        second, second_rejected = _stage_isolating(sink, events[middle:], timeout)
        return first + second, {**first_rejected, **second_rejected}


def _backoff(attempts: int) -> timedelta:
    delay = min(outbox_settings.BACKOFF_MAX_SECONDS, outbox_settings.BACKOFF_BASE_SECONDS * 2 ** (attempts - 1))
    # Jitter spreads the retries of many instances after a shared outage.
    return timedelta(seconds=delay * random.uniform(0.8, 1.2))


def _retry_later(rows: Q, attempts: int, error: str) -> None:
    OutboxEvent.objects.filter(rows).update(
        attempts=F("attempts") + 1, next_attempt_at=timezone.now() + _backoff(attempts), last_error=error[:2000]
    )
    metrics.OUTBOX_EXPORT_FAILURES.labels(reason="batch").inc()


def _mark_exported(event_ids: Sequence[uuid.UUID]) -> int:
    """Mark rows exported. One array parameter, not an IN list of thousands of placeholders."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {TABLE} SET exported_at = %s, next_attempt_at = NULL WHERE id = ANY(%s) AND exported_at IS NULL",
            [timezone.now(), list(event_ids)],
        )
        return cursor.rowcount


def _mark_streams_exported(tokens: Sequence[str], staged_at) -> int:
    """Mark exported the rows still recorded under these streams (a recovery may have staged some
    again meanwhile). Found by the recording itself, through the staged rows' index: no list of
    ten thousand ids to send a second time."""
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {TABLE} SET exported_at = %s, next_attempt_at = NULL "
            "WHERE exported_at IS NULL AND NOT (stream = '') AND staged_at = %s AND stream = ANY(%s)",
            [timezone.now(), staged_at, list(tokens)],
        )
        return cursor.rowcount


def _count_exported(events: Sequence[Event], exported: set[uuid.UUID]) -> None:
    for kind, count in Tally(event.kind for event in events if event.event_id in exported).items():
        metrics.OUTBOX_EXPORTED.labels(kind=kind).inc(count)


def _pause_for_tests(variable: str) -> None:
    path = os.environ.get(variable)
    if path:
        Path(path).write_text(str(os.getpid()))
        time.sleep(120)


def outbox_export_batch(
    *, sink: OutboxSink, batch_size: int, timeout: float | None = None, linger: float = 0.0
) -> BatchResult:
    deadline = time.monotonic() + (timeout or outbox_settings.BIGQUERY_TIMEOUT_SECONDS)
    with transaction.atomic():
        rows = list(
            OutboxEvent.objects.select_for_update(skip_locked=True)
            .filter(PENDING, stream="")
            .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=timezone.now()))
            .order_by("created_at")
            .values_list(*EVENT_COLUMNS)[:batch_size]
        )
        if not rows:
            return BatchResult(selected=0, exported=0, rejected=0, failed=False)
        if linger > 0 and len(rows) < batch_size and rows[0][3] > timezone.now() - timedelta(seconds=linger):
            return BatchResult(selected=len(rows), exported=0, rejected=0, failed=False, lingering=True)
        events = _events(rows)
        ids = [row[0] for row in rows]
        try:
            staged, rejected = _stage_isolating(sink, events, max(1.0, deadline - time.monotonic()))
        except SinkError as exc:
            attempts = max(row[4] for row in rows) + 1
            _retry_later(Q(id__in=ids), attempts, str(exc))
            logger.warning(
                "outbox export of %d events failed (attempt %d), retrying later: %s", len(rows), attempts, exc
            )
            return BatchResult(selected=len(rows), exported=0, rejected=0, failed=True)
        now = timezone.now()
        with connection.cursor() as cursor:
            for batch in staged:
                cursor.execute(
                    f"UPDATE {TABLE} SET stream = %s, staged_at = %s WHERE id = ANY(%s)",
                    [batch.token, now, list(batch.event_ids)],
                )
        for event_id, error in rejected.items():
            OutboxEvent.objects.filter(id=event_id).update(
                quarantined_at=now, attempts=F("attempts") + 1, last_error=error[:4000]
            )
    # The streams are recorded: from here on a crash is recovered from them.
    if rejected:
        metrics.OUTBOX_EXPORT_FAILURES.labels(reason="rejected").inc(len(rejected))
        logger.error("outbox: %d event(s) rejected by the sink and quarantined: %s", len(rejected), rejected)
    if not staged:
        return BatchResult(selected=len(rows), exported=0, rejected=len(rejected), failed=False)
    _pause_for_tests(PAUSE_BEFORE_COMMIT_ENV)
    tokens = [batch.token for batch in staged]
    failed = sink.commit(tokens, timeout=max(1.0, deadline - time.monotonic()))
    _pause_for_tests(PAUSE_AFTER_SEND_ENV)
    committed = [batch for batch in staged if batch.token not in failed]
    exported_ids = {event_id for batch in committed for event_id in batch.event_ids}
    with transaction.atomic():
        exported = _mark_streams_exported([batch.token for batch in committed], now) if committed else 0
        if failed:
            attempts = max(row[4] for row in rows) + 1
            _retry_later(Q(stream__in=list(failed), exported_at__isnull=True), attempts, "; ".join(failed.values()))
            logger.warning("outbox: %d stream(s) not committed, recovered later: %s", len(failed), failed)
    _count_exported(events, exported_ids)
    return BatchResult(selected=len(rows), exported=exported, rejected=len(rejected), failed=bool(failed))


def outbox_recover(*, sink: OutboxSink, timeout: float, older_than: float | None = None, limit: int = 20) -> int:
    """Settle batches staged and never marked (their exporter died, or the commit failed): each
    stream is committed if it still can be, its visible events marked exported, the others
    staged again by the next batch. Returns the events marked exported."""
    older_than = outbox_settings.RECOVER_AFTER_SECONDS if older_than is None else older_than
    deadline = time.monotonic() + timeout
    tokens = list(
        OutboxEvent.objects.filter(
            exported_at__isnull=True, staged_at__lt=timezone.now() - timedelta(seconds=older_than)
        )
        .exclude(stream="")
        .filter(Q(next_attempt_at__isnull=True) | Q(next_attempt_at__lte=timezone.now()))
        .order_by()
        .values_list("stream", flat=True)
        .distinct()[:limit]
    )
    total = 0
    for token in tokens:
        if time.monotonic() >= deadline:
            break
        with transaction.atomic():
            rows = list(
                OutboxEvent.objects.select_for_update(skip_locked=True)
                .filter(stream=token, exported_at__isnull=True)
                .values_list(*EVENT_COLUMNS)
            )
            if not rows:
                continue  # another exporter is on it
            events = _events(rows)
            try:
                present = sink.recover(token, events, timeout=max(1.0, deadline - time.monotonic()))
            except SinkError as exc:
                _retry_later(Q(stream=token, exported_at__isnull=True), max(row[4] for row in rows) + 1, str(exc))
                logger.warning("outbox: stream %s not recovered yet: %s", token, exc)
                continue
            exported = _mark_exported([event.event_id for event in events if event.event_id in present])
            missing = [event.event_id for event in events if event.event_id not in present]
            if missing:
                OutboxEvent.objects.filter(id__in=missing).update(stream="", staged_at=None, next_attempt_at=None)
        _count_exported(events, present)
        total += exported
        logger.warning(
            "outbox: recovered stream %s: %d event(s) were in the sink, %d staged again", token, exported, len(missing)
        )
    return total


def outbox_refresh_metrics() -> None:
    stats = outbox_stats()
    metrics.OUTBOX_PENDING.set(stats.pending)
    metrics.OUTBOX_QUARANTINED.set(stats.quarantined)
    metrics.OUTBOX_OLDEST_PENDING_SECONDS.set(stats.oldest_pending_seconds)


def outbox_export(*, max_seconds: float, batch_size: int = 500, linger: float = 0.0) -> int:
    """Export pending events for at most about `max_seconds` (the shutdown step's budget).

    Returns the number of events exported. Settles what a dead exporter left staged first, then
    exports; stops early when nothing is left (or the sink is failing: those rows wait for their
    backoff, or with `linger`, the loop's, when what is left is a batch too young to send). A
    batch started before the deadline is finished; an exporter killed mid-batch loses nothing
    (see the module docstring).
    """
    if max_seconds <= 0:
        # The shutdown step may be called with nothing left of its budget: touch nothing.
        return 0
    deadline = time.monotonic() + max_seconds
    sink = get_sink()
    # Half the budget at most: with a shutdown's few seconds, exporting what is pending comes first.
    total = outbox_recover(sink=sink, timeout=max_seconds / 2)
    while time.monotonic() < deadline:
        # At least a few seconds per batch: a batch cut short is sent again whole next time.
        timeout = max(2.0, deadline - time.monotonic())
        result = outbox_export_batch(sink=sink, batch_size=batch_size, timeout=timeout, linger=linger)
        total += result.exported
        if result.failed or result.lingering or result.selected < batch_size:
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
                exported = outbox_export(
                    max_seconds=10.0, batch_size=batch_size, linger=outbox_settings.BATCH_LINGER_SECONDS
                )
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

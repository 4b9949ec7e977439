"""The exporter against the real PostgreSQL and a real local BigQuery (bqemulator)."""

import datetime as dt
import threading
import time

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.utils import timezone
from prometheus_client import REGISTRY

from lifecycle.outbox.exporter import get_sink, outbox_export, outbox_export_loop
from lifecycle.outbox.models import OutboxEvent
from lifecycle.outbox.services import outbox_prune, outbox_retry_quarantined, record_event
from lifecycle.outbox.sinks import Event
from lifecycle.outbox.sinks.bigquery import BigQuerySink

pytestmark = pytest.mark.django_db(transaction=True)


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def test_outbox_export__each_kind_lands_in_its_table_with_its_payload(bigquery):
    decision = record_event(kind="bee_decision", payload={"bee": "scout-7", "decision": "explore"})
    turn = record_event(kind="llm_conversation", payload={"conversation": "c1", "role": "queen", "text": "hello"})
    state = record_event(kind="lifecycle_event", payload={"instance": "i-1", "state": "ready"})

    assert outbox_export(max_seconds=30) == 3

    rows = bigquery.query(
        "SELECT event_id, kind, created_at, exported_at, JSON_VALUE(payload, '$.decision') AS decision "
        "FROM `{dataset}.bee_decisions`"
    )
    assert [(r.event_id, r.kind, r.decision) for r in rows] == [(str(decision), "bee_decision", "explore")]
    assert rows[0].created_at == OutboxEvent.objects.get(id=decision).created_at
    assert rows[0].exported_at is not None
    assert bigquery.event_ids("llm_conversations") == [str(turn)]
    assert bigquery.event_ids("lifecycle_events") == [str(state)]
    assert OutboxEvent.objects.filter(exported_at__isnull=True).count() == 0
    # Nothing left to do: a second pass exports nothing and adds nothing.
    assert outbox_export(max_seconds=30) == 0
    assert len(bigquery.event_ids("bee_decisions")) == 1
    assert bigquery.sink.staging_tables() == []


def test_outbox_export__events_of_a_rolled_back_transaction_never_reach_bigquery(bigquery):
    def change_that_fails() -> None:
        with transaction.atomic():
            record_event(kind="bee_decision", payload={"bee": "ghost"})
            raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        change_that_fails()
    kept = record_event(kind="bee_decision", payload={"bee": "real"})

    outbox_export(max_seconds=30)

    assert bigquery.event_ids("bee_decisions") == [str(kept)]
    ghosts = "SELECT COUNT(*) AS n FROM `{dataset}.bee_decisions` WHERE JSON_VALUE(payload, '$.bee') = 'ghost'"
    assert bigquery.query(ghosts)[0].n == 0


def test_bigquery_sink__same_batch_sent_twice_is_there_once(bigquery):
    events = [
        Event(
            event_id=record_event(kind="llm_conversation", payload={"n": n}),
            kind="llm_conversation",
            table="llm_conversations",
            payload={"n": n},
            created_at=timezone.now(),
        )
        for n in range(50)
    ]

    bigquery.sink.send(events)
    bigquery.sink.send(events[10:])  # a re-send after a crash, overlapping the first

    rows = bigquery.query("SELECT COUNT(*) AS n, COUNT(DISTINCT event_id) AS d FROM `{dataset}.llm_conversations`")
    assert (rows[0].n, rows[0].d) == (50, 50)


def test_outbox_export__rejected_row_quarantined_and_the_rest_flow(bigquery, settings):
    settings.OUTBOX_BIGQUERY_COLUMNS = {"bee_decisions": [("confidence", "FLOAT64")]}
    BigQuerySink().setup()  # adds the typed column to the existing table
    good = [record_event(kind="bee_decision", payload={"confidence": n / 10}) for n in range(6)]
    bad = record_event(kind="bee_decision", payload={"confidence": "very"})
    good += [record_event(kind="bee_decision", payload={"confidence": 0.9}) for _ in range(5)]
    failures_before = _sample("outbox_export_failures_total", reason="rejected")

    assert outbox_export(max_seconds=30) == 11

    assert sorted(bigquery.event_ids("bee_decisions")) == sorted(str(e) for e in good)
    quarantined = OutboxEvent.objects.get(id=bad)
    assert quarantined.state == "quarantined"
    assert "Failed to cast value to numerical" in quarantined.last_error
    assert _sample("outbox_export_failures_total", reason="rejected") == failures_before + 1
    assert _sample("outbox_quarantined") == 1
    # A quarantined row is not retried by the exporter until someone puts it back.
    assert outbox_export(max_seconds=30) == 0
    assert outbox_retry_quarantined() == 1
    assert OutboxEvent.objects.get(id=bad).state == "pending"


def test_outbox_export__sink_down_keeps_rows_pending_with_backoff_then_they_flow(bigquery, settings):
    event_id = record_event(kind="lifecycle_event", payload={"state": "draining"})
    dataset_url = settings.OUTBOX_BIGQUERY_EMULATOR_URL
    settings.OUTBOX_BIGQUERY_EMULATOR_URL = "http://127.0.0.1:9"  # nothing listens there
    failures_before = _sample("outbox_export_failures_total", reason="batch")
    started = time.monotonic()

    assert outbox_export(max_seconds=0.5) == 0

    # The client's own retries (10 minutes by default) are cut to the export's budget.
    assert time.monotonic() - started < 5

    row = OutboxEvent.objects.get(id=event_id)
    assert (row.state, row.attempts) == ("pending", 1)
    assert row.next_attempt_at > timezone.now()
    assert "ConnectionError" in row.last_error
    assert _sample("outbox_export_failures_total", reason="batch") == failures_before + 1
    # Within its backoff the row is not tried again, even once BigQuery is back.
    settings.OUTBOX_BIGQUERY_EMULATOR_URL = dataset_url
    assert outbox_export(max_seconds=30) == 0
    OutboxEvent.objects.filter(id=event_id).update(next_attempt_at=timezone.now() - dt.timedelta(seconds=1))
    assert outbox_export(max_seconds=30) == 1
    assert bigquery.event_ids("lifecycle_events") == [str(event_id)]


def test_outbox_export__no_budget_left_exports_nothing(bigquery):
    record_event(kind="lifecycle_event", payload={"state": "stopping"})

    assert outbox_export(max_seconds=0) == 0

    assert OutboxEvent.objects.get().state == "pending"


def test_outbox_export__metrics_follow_the_queue(bigquery):
    for n in range(3):
        record_event(kind="bee_decision", payload={"n": n})
    OutboxEvent.objects.update(created_at=timezone.now() - dt.timedelta(seconds=120))
    exported_before = _sample("outbox_exported_total", kind="bee_decision")
    from lifecycle.outbox.exporter import outbox_refresh_metrics

    outbox_refresh_metrics()
    assert _sample("outbox_pending") == 3
    assert _sample("outbox_oldest_pending_seconds") >= 120

    outbox_export(max_seconds=30)

    assert _sample("outbox_pending") == 0
    assert _sample("outbox_oldest_pending_seconds") == 0
    assert _sample("outbox_exported_total", kind="bee_decision") == exported_before + 3


def test_outbox_export_loop__exports_in_the_background_until_stopped(bigquery):
    stop = threading.Event()
    worker = threading.Thread(target=outbox_export_loop, kwargs={"stop": stop, "poll_interval": 0.05})
    worker.start()
    try:
        event_id = record_event(kind="llm_conversation", payload={"text": "hi"})
        deadline = time.monotonic() + 20
        while OutboxEvent.objects.get(id=event_id).exported_at is None and time.monotonic() < deadline:
            time.sleep(0.05)
    finally:
        stop.set()
        worker.join(timeout=20)

    assert not worker.is_alive()
    assert bigquery.event_ids("llm_conversations") == [str(event_id)]


def test_outbox_prune__deletes_only_rows_exported_before_the_retention(settings):
    settings.OUTBOX_RETENTION_DAYS = 7
    old, recent, pending, quarantined = (record_event(kind="bee_decision", payload={"n": n}) for n in range(4))
    now = timezone.now()
    OutboxEvent.objects.filter(id=old).update(exported_at=now - dt.timedelta(days=8))
    OutboxEvent.objects.filter(id=recent).update(exported_at=now - dt.timedelta(days=6))
    OutboxEvent.objects.filter(id=quarantined).update(quarantined_at=now - dt.timedelta(days=30))

    assert outbox_prune() == 1

    assert set(OutboxEvent.objects.values_list("id", flat=True)) == {recent, pending, quarantined}


def test_bigquery_setup__idempotent_day_partitions_on_created_at_expiring_after_365_days(bigquery):
    call_command("bigquery_setup")
    call_command("bigquery_setup")

    for name in ("llm_conversations", "bee_decisions", "lifecycle_events", "governance_events"):
        table = bigquery.client.get_table(f"{bigquery.dataset_id}.{name}")
        assert table.time_partitioning.type_ == "DAY"
        assert table.time_partitioning.field == "created_at"
        assert table.time_partitioning.expiration_ms == 365 * 24 * 3600 * 1000
        assert [f.name for f in table.schema][:5] == ["event_id", "kind", "created_at", "exported_at", "payload"]
    assert isinstance(get_sink(), BigQuerySink)


def test_bigquery_setup__unreachable_bigquery_fails_fast_with_a_message(settings):
    settings.OUTBOX_BIGQUERY_EMULATOR_URL = "http://127.0.0.1:9"  # nothing listens there
    settings.OUTBOX_BIGQUERY_TIMEOUT_SECONDS = 1.0
    started = time.monotonic()

    with pytest.raises(CommandError, match="BigQuery is not reachable or refused"):
        call_command("bigquery_setup")

    assert time.monotonic() - started < 10

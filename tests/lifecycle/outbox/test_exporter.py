"""The exporter against the real PostgreSQL and a real local BigQuery (bqemulator)."""

import datetime as dt
import io
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from django.core.management import CommandError, call_command
from django.db import transaction
from django.utils import timezone
from google.cloud import bigquery as bq
from prometheus_client import REGISTRY

from core.redis import redis_client
from lifecycle.outbox.exporter import get_sink, outbox_export, outbox_export_loop, reset_sink
from lifecycle.outbox.models import KIND_TABLES, OutboxEvent
from lifecycle.outbox.services import outbox_prune, outbox_retry_quarantined, record_event
from lifecycle.outbox.sinks import Event
from lifecycle.outbox.sinks.bigquery import BigQuerySink
from tests.support.sinks import SINK_KEY, QuietRejectingSink

pytestmark = pytest.mark.django_db(transaction=True)
KINDS = ["llm_conversation", "bee_decision", "lifecycle_event"]


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


def _events(ids) -> list[Event]:
    return [
        Event(event_id=row.id, kind=row.kind, table=row.table, payload=row.payload, created_at=row.created_at)
        for row in OutboxEvent.objects.filter(id__in=list(ids)).order_by("created_at")
    ]


def _stage_and_record(sink: BigQuerySink, ids, *, commit: bool, age: float = 120.0) -> list[str]:
    """What an exporter killed after recording its streams left behind (committed or not)."""
    staged = sink.stage(_events(ids))
    for batch in staged:
        OutboxEvent.objects.filter(id__in=batch.event_ids).update(
            stream=batch.token, staged_at=timezone.now() - dt.timedelta(seconds=age)
        )
    if commit:
        assert sink.commit([batch.token for batch in staged]) == {}
    return [batch.token for batch in staged]


def _rows_once(bigquery, table: str) -> list[str]:
    """The table's event ids, asserting that none is there twice."""
    ids = bigquery.event_ids(table)
    assert len(ids) == len(set(ids)), "an event is in BigQuery twice"
    return sorted(ids)


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
    assert OutboxEvent.objects.get(id=decision).stream.startswith("projects/")


def test_outbox_export__a_batch_runs_no_query_and_no_load_job(bigquery):
    recorded = {str(record_event(kind=KINDS[n % 3], payload={"n": n})) for n in range(30)}
    jobs_before = {job.job_id for job in bigquery.client.list_jobs()}

    # Three batches of three kinds: nine streams, and not one job reading or loading a table.
    assert outbox_export(max_seconds=30, batch_size=10) == 30

    assert {job.job_id for job in bigquery.client.list_jobs()} == jobs_before
    assert {i for table in KIND_TABLES.values() for i in _rows_once(bigquery, table)} == recorded


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


def test_bigquery_sink__a_stream_is_visible_once_however_many_commit_it(bigquery):
    events = _events(record_event(kind="llm_conversation", payload={"n": n}) for n in range(50))
    [staged] = bigquery.sink.stage(events)
    assert bigquery.event_ids("llm_conversations") == []  # staged: not visible yet

    # Four exporters racing to commit the same stream (an exporter and recoverers).
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: BigQuerySink().commit([staged.token]), range(4)))

    assert {} in results
    assert _rows_once(bigquery, "llm_conversations") == sorted(str(e.event_id) for e in events)
    # Asked afterwards, the stream tells that all its events are in.
    assert bigquery.sink.recover(staged.token, events) == {e.event_id for e in events}


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
    assert "column confidence: 'very' does not fit" in quarantined.last_error
    assert _sample("outbox_export_failures_total", reason="rejected") == failures_before + 1
    assert _sample("outbox_quarantined") == 1
    # A quarantined row is not retried by the exporter until someone puts it back.
    assert outbox_export(max_seconds=30) == 0
    assert outbox_retry_quarantined() == 1
    assert OutboxEvent.objects.get(id=bad).state == "pending"


def test_outbox_export__sink_down_keeps_rows_pending_with_backoff_then_they_flow(bigquery, settings):
    event_id = record_event(kind="lifecycle_event", payload={"state": "draining"})
    grpc_address = settings.OUTBOX_BIGQUERY_EMULATOR_GRPC
    settings.OUTBOX_BIGQUERY_EMULATOR_GRPC = "127.0.0.1:9"  # nothing listens there
    failures_before = _sample("outbox_export_failures_total", reason="batch")
    started = time.monotonic()

    assert outbox_export(max_seconds=0.5) == 0

    # The client's own retries (10 minutes by default) are cut to the export's budget.
    assert time.monotonic() - started < 5

    row = OutboxEvent.objects.get(id=event_id)
    assert (row.state, row.attempts) == ("pending", 1)
    assert row.next_attempt_at > timezone.now()
    assert "ServiceUnavailable" in row.last_error
    assert _sample("outbox_export_failures_total", reason="batch") == failures_before + 1
    # Within its backoff the row is not tried again, even once BigQuery is back.
    settings.OUTBOX_BIGQUERY_EMULATOR_GRPC = grpc_address
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


def test_outbox_export_loop__exports_in_the_background_until_stopped(bigquery, settings):
    settings.OUTBOX_BATCH_LINGER_SECONDS = 0.2
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
        assert table.clustering_fields == ["event_id"]
        assert [f.name for f in table.schema][:5] == ["event_id", "kind", "created_at", "exported_at", "payload"]
    assert isinstance(get_sink(), BigQuerySink)


def test_bigquery_setup__unreachable_bigquery_fails_fast_with_a_message(settings):
    settings.OUTBOX_BIGQUERY_EMULATOR_URL = "http://127.0.0.1:9"  # nothing listens there
    settings.OUTBOX_BIGQUERY_TIMEOUT_SECONDS = 1.0
    started = time.monotonic()

    with pytest.raises(CommandError, match="BigQuery is not reachable or refused"):
        call_command("bigquery_setup")

    assert time.monotonic() - started < 10


def test_outbox_export__linger_holds_a_young_small_batch_never_a_full_one(bigquery):
    young = [record_event(kind="bee_decision", payload={"n": n}) for n in range(3)]

    assert outbox_export(max_seconds=30, batch_size=5, linger=60) == 0
    assert OutboxEvent.objects.filter(exported_at__isnull=True).count() == 3

    # Five pending make a full batch: sent at once, however young.
    young += [record_event(kind="bee_decision", payload={"n": n}) for n in range(3, 5)]
    assert outbox_export(max_seconds=30, batch_size=5, linger=60) == 5
    # A small batch goes once its oldest event is older than the linger.
    old = record_event(kind="bee_decision", payload={"n": "old"})
    OutboxEvent.objects.filter(id=old).update(created_at=timezone.now() - dt.timedelta(seconds=61))
    assert outbox_export(max_seconds=30, batch_size=5, linger=60) == 1
    assert _rows_once(bigquery, "bee_decisions") == sorted(str(i) for i in [*young, old])


def test_outbox_recover__streams_recorded_never_committed_are_committed_once(bigquery):
    ids = [record_event(kind=KINDS[n % 3], payload={"n": n}) for n in range(24)]
    tokens = _stage_and_record(bigquery.sink, ids, commit=False)
    assert len(tokens) == 3
    assert all(bigquery.event_ids(table) == [] for table in KIND_TABLES.values())

    # The next exporter settles them before anything else.
    assert outbox_export(max_seconds=30) == 24

    assert {i for table in KIND_TABLES.values() for i in _rows_once(bigquery, table)} == {str(i) for i in ids}
    assert set(OutboxEvent.objects.values_list("stream", flat=True)) == set(tokens)
    assert OutboxEvent.objects.filter(exported_at__isnull=True).count() == 0


def test_outbox_recover__streams_committed_never_marked_are_marked_not_sent_again(bigquery):
    ids = [record_event(kind="lifecycle_event", payload={"n": n}) for n in range(20)]
    [token] = _stage_and_record(bigquery.sink, ids, commit=True)
    assert len(bigquery.event_ids("lifecycle_events")) == 20

    assert outbox_export(max_seconds=30) == 20

    assert _rows_once(bigquery, "lifecycle_events") == sorted(str(i) for i in ids)
    assert set(OutboxEvent.objects.values_list("stream", flat=True)) == {token}


def test_outbox_recover__a_stream_bigquery_no_longer_knows_is_settled_by_the_table(bigquery):
    ids = [record_event(kind="bee_decision", payload={"n": n}) for n in range(10)]
    # Half went in through a stream since forgotten (BigQuery drops streams; an emulator restart
    # forgets them), the other half never did.
    bigquery.sink.send(_events(ids[:5]))
    parent = f"projects/{bigquery.client.project}/datasets/{bigquery.sink.dataset_name}/tables/bee_decisions"
    gone = f"{parent}/streams/{'0' * 16}"
    OutboxEvent.objects.update(stream=gone, staged_at=timezone.now() - dt.timedelta(minutes=5))

    assert outbox_export(max_seconds=30) == 10

    assert _rows_once(bigquery, "bee_decisions") == sorted(str(i) for i in ids)
    # The five it lacked went in a new stream of their own.
    assert set(OutboxEvent.objects.filter(id__in=ids[5:]).values_list("stream", flat=True)) != {gone}


def test_outbox_recover__leaves_a_batch_staged_moments_ago_to_its_exporter(bigquery):
    ids = [record_event(kind="bee_decision", payload={"n": n}) for n in range(4)]
    _stage_and_record(bigquery.sink, ids, commit=False, age=1)

    assert outbox_export(max_seconds=30) == 0

    assert {row.state for row in OutboxEvent.objects.all()} == {"staged"}
    assert bigquery.event_ids("bee_decisions") == []


def test_outbox_export__a_rejection_naming_no_row_is_narrowed_down_to_the_bad_rows(settings):
    settings.OUTBOX_SINK = "tests.support.sinks.QuietRejectingSink"
    reset_sink()
    redis_client().delete(SINK_KEY)
    QuietRejectingSink.sends = 0
    ids = [record_event(kind="bee_decision", payload={"n": n, "reject": n in (3, 12)}) for n in range(16)]

    assert outbox_export(max_seconds=30, batch_size=16) == 14

    quarantined = set(OutboxEvent.objects.filter(quarantined_at__isnull=False).values_list("id", flat=True))
    assert quarantined == {ids[3], ids[12]}
    assert redis_client().smembers(SINK_KEY) == {str(i).encode() for i in ids if i not in quarantined}
    # Bisection, not one send per row.
    assert QuietRejectingSink.sends < 16
    reset_sink()


def _old_layout(bigquery, table: str, *, partitioned: bool) -> list[str]:
    """Replace `table` by one of a former layout (no partitioning, or no clustering) holding rows
    over three days, one with a column the layout does not have."""
    table_id = f"{bigquery.dataset_id}.{table}"
    bigquery.client.delete_table(table_id)
    schema = [*bigquery.sink.schema(table), bq.SchemaField("legacy", "STRING")]
    old = bq.Table(table_id, schema=schema)
    if partitioned:
        old.time_partitioning = bq.TimePartitioning(field="created_at")
    bigquery.client.create_table(old)
    ids = [str(uuid.uuid4()) for _ in range(30)]
    values = ", ".join(
        f"('{event_id}', 'k', TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL {n % 3} DAY), NULL, "
        f"JSON '{{\"n\": {n}}}', {'NULL' if n else repr('kept')})"
        for n, event_id in enumerate(ids)
    )
    bigquery.query(
        f"INSERT INTO `{table_id}` (event_id, kind, created_at, exported_at, payload, legacy) VALUES {values}"
    )
    return ids


def test_bigquery_setup__brings_old_layouts_to_the_new_one_keeping_every_row(bigquery):
    unpartitioned = _old_layout(bigquery, "bee_decisions", partitioned=False)
    unclustered = _old_layout(bigquery, "lifecycle_events", partitioned=True)
    out = io.StringIO()

    call_command("bigquery_setup", stdout=out)

    for table, ids in (("bee_decisions", unpartitioned), ("lifecycle_events", unclustered)):
        layout = bigquery.client.get_table(f"{bigquery.dataset_id}.{table}")
        assert (layout.time_partitioning.type_, layout.time_partitioning.field) == ("DAY", "created_at")
        assert layout.time_partitioning.expiration_ms == 365 * 24 * 3600 * 1000
        assert layout.clustering_fields == ["event_id"]
        assert _rows_once(bigquery, table) == sorted(ids)
        kept = bigquery.query(f"SELECT event_id FROM `{{dataset}}.{table}` WHERE legacy = 'kept'")
        assert [row.event_id for row in kept] == [ids[0]]
    text = out.getvalue()
    assert "bee_decisions: rebuilt into day partitions on created_at, clustered on event_id (30 rows" in text
    assert "lifecycle_events: updated (time_partitioning, clustering_fields)" in text
    backups = [t.table_id for t in bigquery.client.list_tables(bigquery.dataset_id) if "__before_layout_" in t.table_id]
    assert [b.split("__")[0] for b in backups] == ["bee_decisions"]
    # Idempotent, and the rebuilt table takes the exporter's streams.
    again = io.StringIO()
    call_command("bigquery_setup", stdout=again)
    assert "bee_decisions: up to date" in again.getvalue()
    event_id = record_event(kind="bee_decision", payload={"after": "rebuild"})
    assert outbox_export(max_seconds=30) == 1
    assert _rows_once(bigquery, "bee_decisions") == sorted([*unpartitioned, str(event_id)])


def test_bigquery_setup__reexport_since_sends_again_what_bigquery_lacks(bigquery):
    ids = [record_event(kind="bee_decision", payload={"n": n}) for n in range(6)]
    assert outbox_export(max_seconds=30) == 6
    lost = [str(i) for i in ids[:2]]
    bigquery.query(f"DELETE FROM `{{dataset}}.bee_decisions` WHERE event_id IN ('{lost[0]}', '{lost[1]}')")
    out = io.StringIO()

    call_command("bigquery_setup", "--reexport-since", (timezone.now() - dt.timedelta(hours=1)).isoformat(), stdout=out)

    assert "bee_decisions: 2 event(s) missing from BigQuery queued again" in out.getvalue()
    assert {str(i) for i in OutboxEvent.objects.filter(exported_at__isnull=True).values_list("id", flat=True)} == set(
        lost
    )
    assert outbox_export(max_seconds=30) == 2
    assert _rows_once(bigquery, "bee_decisions") == sorted(str(i) for i in ids)


def test_outbox_export__a_stream_staged_and_never_recorded_never_shows(bigquery):
    ids = [record_event(kind="bee_decision", payload={"n": n}) for n in range(8)]
    # An exporter killed before its first transaction committed: its stream is staged, the rows
    # know nothing of it.
    [orphan] = bigquery.sink.stage(_events(ids))

    assert outbox_export(max_seconds=30) == 8

    assert _rows_once(bigquery, "bee_decisions") == sorted(str(i) for i in ids)
    assert orphan.token not in set(OutboxEvent.objects.values_list("stream", flat=True))

"""Exporters as separate processes (as on several instances), racing and being SIGKILLed."""

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from django.db import transaction
from django.utils import timezone

from lifecycle.outbox.exporter import PAUSE_AFTER_SEND_ENV, PAUSE_BEFORE_COMMIT_ENV, outbox_export, reset_sink
from lifecycle.outbox.models import OutboxEvent
from lifecycle.outbox.services import record_event
from lifecycle.outbox.sinks.bigquery import BigQuerySink
from tests.support.bqemulator import BigQueryEmulator

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[3]
KINDS = ["llm_conversation", "bee_decision", "lifecycle_event"]
TABLES = ["llm_conversations", "bee_decisions", "lifecycle_events"]


def _record(count: int) -> set[str]:
    with transaction.atomic():
        return {str(record_event(kind=KINDS[n % 3], payload={"n": n})) for n in range(count)}


def _record_many(count: int) -> set[str]:
    """As record_event writes them, in one statement (10,000 round trips are not the point here)."""
    now = timezone.now()
    events = [OutboxEvent(kind=KINDS[n % 3], payload={"n": n}, created_at=now) for n in range(count)]
    OutboxEvent.objects.bulk_create(events, batch_size=2000)
    return {str(event.id) for event in events}


def _exporter(env: dict[str, str], *args: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "manage.py", "outbox_export", *args],
        cwd=ROOT,
        env={**os.environ, **env},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )


def _in_bigquery(bigquery) -> tuple[int, set[str]]:
    """Rows and distinct event ids in the three tables users query."""
    rows = 0
    ids: set[str] = set()
    for table in TABLES:
        table_ids = bigquery.event_ids(table)
        rows += len(table_ids)
        ids.update(table_ids)
    return rows, ids


def test_outbox_export__three_concurrent_exporters_put_10000_events_in_bigquery_once(bigquery, exporter_env):
    recorded = _record_many(10_000)

    exporters = [_exporter(exporter_env, "--max-seconds", "90", "--batch-size", "500") for _ in range(3)]
    outputs = [p.communicate(timeout=120)[0] for p in exporters]

    assert [p.returncode for p in exporters] == [0, 0, 0], outputs
    counts = [int(out.strip().splitlines()[-1].split()[1]) for out in outputs]
    # SKIP LOCKED: no row was taken by two exporters (the counts add up exactly)...
    assert sum(counts) == 10_000, counts
    # ...and they really ran side by side.
    assert sum(1 for c in counts if c > 0) >= 2, counts
    rows, ids = _in_bigquery(bigquery)
    assert (rows, ids) == (10_000, recorded)
    assert OutboxEvent.objects.filter(exported_at__isnull=True).count() == 0


def _killed_at(env: dict[str, str], pause: str, paused: Path) -> None:
    """Run an exporter until it reaches the pause point, and SIGKILL it there."""
    exporter = _exporter({**env, pause: str(paused)}, "--batch-size", "1000")
    deadline = time.monotonic() + 60
    while not paused.exists() and time.monotonic() < deadline and exporter.poll() is None:
        time.sleep(0.05)
    assert paused.exists(), exporter.communicate(timeout=5)[0]
    os.killpg(exporter.pid, signal.SIGKILL)
    exporter.wait(timeout=10)


def test_outbox_export__sigkill_between_bigquery_commit_and_marking_still_once(
    bigquery, exporter_env, tmp_path, settings
):
    recorded = _record(600)

    _killed_at(exporter_env, PAUSE_AFTER_SEND_ENV, tmp_path / "paused")

    # The streams are committed, the rows still unmarked in PostgreSQL.
    assert _in_bigquery(bigquery)[1] == recorded
    assert OutboxEvent.objects.filter(exported_at__isnull=True).count() == 600
    # The next exporter (any instance), once the batch is old enough to be taken for dead...
    settings.OUTBOX_RECOVER_AFTER_SECONDS = 0
    assert outbox_export(max_seconds=60) == 600

    # ...finds the streams committed and marks the rows: nothing sent twice.
    rows, ids = _in_bigquery(bigquery)
    assert (rows, ids) == (600, recorded)
    assert OutboxEvent.objects.filter(exported_at__isnull=True).count() == 0


def test_outbox_export__sigkill_between_recording_and_commit_then_racing_recoverers_commit_once(
    bigquery, exporter_env, tmp_path
):
    recorded = _record(600)

    _killed_at(exporter_env, PAUSE_BEFORE_COMMIT_ENV, tmp_path / "paused")

    # The streams are recorded and never committed: nothing visible.
    assert _in_bigquery(bigquery) == (0, set())
    assert {row.state for row in OutboxEvent.objects.all()} == {"staged"}
    # Three exporters find the dead batch at the same moment.
    env = {**exporter_env, "OUTBOX_RECOVER_AFTER_SECONDS": "0"}
    recoverers = [_exporter(env, "--max-seconds", "60") for _ in range(3)]
    outputs = [p.communicate(timeout=120)[0] for p in recoverers]

    assert [p.returncode for p in recoverers] == [0, 0, 0], outputs
    assert sum(int(out.strip().splitlines()[-1].split()[1]) for out in outputs) == 600, outputs
    rows, ids = _in_bigquery(bigquery)
    assert (rows, ids) == (600, recorded)
    assert OutboxEvent.objects.filter(exported_at__isnull=True).count() == 0


def test_outbox_export__a_stream_limit_refusal_keeps_the_batch_pending_then_it_flows(tmp_path, settings):
    # An emulator whose streams take 5 rows at most: BigQuery's RESOURCE_EXHAUSTED, as its
    # quotas answer.
    emulator = BigQueryEmulator(tmp_path / "limited", env={"BQEMU_WRITE_API_MAX_STREAM_ROWS": "5"}).start()
    try:
        settings.OUTBOX_BIGQUERY_EMULATOR_URL = emulator.url
        settings.OUTBOX_BIGQUERY_EMULATOR_GRPC = emulator.grpc_address
        settings.OUTBOX_BIGQUERY_PROJECT = emulator.project
        settings.OUTBOX_BIGQUERY_DATASET = "limited"
        BigQuerySink().setup()
        recorded = {str(record_event(kind="bee_decision", payload={"n": n})) for n in range(6)}

        # Six rows of one kind: one stream of six.
        assert outbox_export(max_seconds=30, batch_size=6) == 0

        rows = list(OutboxEvent.objects.all())
        assert {(row.state, row.attempts) for row in rows} == {("pending", 1)}
        assert all("exceed the per-stream cap" in row.last_error for row in rows)
        # Within the limit, once their backoff is over, they go (and nothing of the refused stream shows).
        OutboxEvent.objects.update(next_attempt_at=None)
        assert outbox_export(max_seconds=30, batch_size=5) == 6
        rows = BigQuerySink().client.query("SELECT event_id FROM `limited.bee_decisions`").result()
        assert sorted(row.event_id for row in rows) == sorted(recorded)
    finally:
        reset_sink()
        emulator.stop()

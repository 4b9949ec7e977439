"""Outbox benchmark: prints JSON.

- `record_event` cost: p50/p95 of a request-like transaction (insert a row, commit) with and
  without a `record_event` in it, measured in the same run; the difference is what the outbox
  adds to a request (goal: < 1 ms at p50).
- export throughput: events per second from the outbox into BigQuery (a bqemulator started on
  free ports), per batch size, each checked to be in BigQuery once; and, as the baseline, the
  sink alone (load + MERGE of the same number of events, no PostgreSQL) (goal: >= 5,000/s).

Run: .venv/bin/python bench/outbox.py [--events 20000] [--batch-sizes 500,5000,10000] [--rounds 2000]
It uses its own database (TEST_DATABASE_NAME, default bench_omk_outbox), created and dropped here.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.test")
os.environ.setdefault("TEST_DATABASE_NAME", "bench_omk_outbox")
os.environ.setdefault("LOG_LEVEL", "WARNING")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.contrib.auth.models import Group  # noqa: E402
from django.db import connection, transaction  # noqa: E402
from django.utils import timezone  # noqa: E402

from lifecycle.outbox.exporter import outbox_export, reset_sink  # noqa: E402
from lifecycle.outbox.models import KIND_TABLES, OutboxEvent  # noqa: E402
from lifecycle.outbox.services import record_event  # noqa: E402
from lifecycle.outbox.sinks import Event  # noqa: E402
from lifecycle.outbox.sinks.bigquery import BigQuerySink  # noqa: E402
from tests.support.bqemulator import BigQueryEmulator  # noqa: E402

KINDS = ["llm_conversation", "bee_decision", "lifecycle_event"]
PAYLOAD = {"bee": "scout-7", "decision": "explore", "context": {"flower": "clover", "distance_m": 420}, "score": 0.82}


def percentile(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1] if len(values) > 1 else values[0]


def bench_record_event(rounds: int) -> dict:
    calls: list[float] = []
    cpu: list[float] = []

    def request(n: int, with_event: bool) -> float:
        started = time.perf_counter()
        with transaction.atomic():
            Group.objects.create(name=f"g-{with_event}-{n}")
            if with_event:
                call_started, cpu_started = time.perf_counter(), time.process_time()
                record_event(kind="bee_decision", payload={**PAYLOAD, "n": n})
                calls.append((time.perf_counter() - call_started) * 1000)
                cpu.append((time.process_time() - cpu_started) * 1000)
        return (time.perf_counter() - started) * 1000

    for n in range(200):  # warm-up: connection, statement caches
        request(-n - 1, n % 2 == 0)
    calls.clear()
    cpu.clear()
    baseline: list[float] = []
    with_event: list[float] = []
    # Interleaved, so a burst of load on the machine hits both series alike.
    for n in range(rounds):
        baseline.append(request(n, False))
        with_event.append(request(n, True))
    Group.objects.all().delete()
    OutboxEvent.objects.all().delete()

    def summary(values: list[float]) -> dict:
        return {"p50": round(percentile(values, 50), 3), "p95": round(percentile(values, 95), 3)}

    return {
        "rounds": rounds,
        "request_without_event_ms": summary(baseline),
        "request_with_event_ms": summary(with_event),
        "record_event_added_p50_ms": round(percentile(with_event, 50) - percentile(baseline, 50), 3),
        # The call alone (one INSERT round trip), and the CPU it takes in this process: the
        # rest of the call's time is waiting for PostgreSQL.
        "record_event_call_ms": summary(calls),
        "record_event_cpu_ms": summary(cpu),
        "goal_p50_ms": 1.0,
    }


def fill_outbox(count: int) -> None:
    for start in range(0, count, 1000):
        with transaction.atomic():
            for n in range(start, min(count, start + 1000)):
                record_event(kind=KINDS[n % 3], payload={**PAYLOAD, "n": n})


def bigquery_rows(sink: BigQuerySink) -> tuple[int, int]:
    sql = " UNION ALL ".join(f"SELECT event_id FROM `{sink.dataset_id}.{table}`" for table in KIND_TABLES.values())
    row = next(iter(sink.client.query(f"SELECT COUNT(*) AS n, COUNT(DISTINCT event_id) AS d FROM ({sql})").result()))
    return row.n, row.d


def bench_export(events: int, batch_size: int) -> dict:
    settings.OUTBOX_BIGQUERY_DATASET = f"bench_{batch_size}_{int(time.time())}"
    reset_sink()
    sink = BigQuerySink()
    sink.setup()
    OutboxEvent.objects.all().delete()
    fill_outbox(events)
    started = time.perf_counter()
    exported = 0
    while exported < events:
        done = outbox_export(max_seconds=60, batch_size=batch_size)
        if done == 0:
            break
        exported += done
    elapsed = time.perf_counter() - started
    rows, distinct = bigquery_rows(sink)
    # Baseline: the sink alone, same events count and batch size, no PostgreSQL.
    settings.OUTBOX_BIGQUERY_DATASET += "_sink"
    reset_sink()
    bare = BigQuerySink()
    bare.setup()
    now = timezone.now()
    batches = [
        [
            Event(event_id=uuid.uuid4(), kind=kind, table=KIND_TABLES[kind], payload=PAYLOAD, created_at=now)
            for kind in (KINDS[n % 3] for n in range(start, min(events, start + batch_size)))
        ]
        for start in range(0, events, batch_size)
    ]
    sink_started = time.perf_counter()
    for batch in batches:
        bare.send(batch, timeout=60)
    sink_elapsed = time.perf_counter() - sink_started
    for s in (sink, bare):
        s.client.delete_dataset(s.dataset_id, delete_contents=True, not_found_ok=True)
        s.close()
    return {
        "batch_size": batch_size,
        "events": events,
        "exported": exported,
        "in_bigquery": rows,
        "distinct_in_bigquery": distinct,
        "seconds": round(elapsed, 3),
        "events_per_second": round(exported / elapsed),
        "sink_only_events_per_second": round(events / sink_elapsed),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch-sizes", default="500,5000,10000", help="comma-separated; empty: no export run")
    parser.add_argument("--rounds", type=int, default=2000)
    args = parser.parse_args()

    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    with tempfile.TemporaryDirectory() as data_dir:
        emulator = BigQueryEmulator(Path(data_dir)).start()
        settings.OUTBOX_BIGQUERY_EMULATOR_URL = emulator.url
        settings.OUTBOX_BIGQUERY_PROJECT = emulator.project
        try:
            result = {
                "record_event": bench_record_event(args.rounds),
                "export": [bench_export(args.events, int(size)) for size in args.batch_sizes.split(",") if size],
                "export_goal_events_per_second": 5000,
                "cpu_count": os.cpu_count(),
                "load_average_1m": round(os.getloadavg()[0], 2),
            }
        finally:
            reset_sink()
            emulator.stop()
            connection.creation.destroy_test_db(old_name, verbosity=0)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

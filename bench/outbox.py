"""Outbox benchmark: prints JSON.

- `record_event` cost: p50/p95 of a request-like transaction (insert a row, commit) with and
  without a `record_event` in it, measured in the same run; the difference is what the outbox
  adds to a request (goal: < 1 ms at p50).
- export throughput: events per second from the outbox into BigQuery (a bqemulator started on
  free ports), per batch size, each checked to be in BigQuery once; and, as the baseline, the
  sink alone (stage + commit of the same number of events, no PostgreSQL) (goal: >= 5,000/s).
- table-size sweep: seconds per 10,000-event batch into a table already holding 0 to 2,000,000
  rows (median of 3), for the sink as it is (Storage Write API), the exporter through it
  (PostgreSQL rows to marked), and in the same run the former sink (load into a staging table +
  `MERGE ... ON event_id`) and that MERGE with the batch's partitions as constants (goal: the
  largest table within 1.2x of the empty one). Also what the emulator does with a filter on the
  partitioning column, and what a dry run of each MERGE reports.

The emulator runs without its time-travel emulation, which copies the whole table after every
write (tests/support/bqemulator.py, NO_TIME_TRAVEL): that copy is no part of BigQuery's cost and
would hide what the export costs; --time-travel keeps it, to see it.

Run: .venv/bin/python bench/outbox.py [--events 20000] [--batch-sizes 500,5000,10000] [--rounds 2000]
     [--table-sizes 0,200000,1000000,2000000] [--repeats 3] [--time-travel]
It uses its own database (TEST_DATABASE_NAME, default bench_omk_outbox), created and dropped here.
"""

from __future__ import annotations

import argparse
import io
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

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

from lifecycle.outbox.exporter import outbox_export, outbox_export_batch, reset_sink  # noqa: E402
from lifecycle.outbox.models import KIND_TABLES, OutboxEvent  # noqa: E402
from lifecycle.outbox.services import record_event  # noqa: E402
from lifecycle.outbox.sinks import Event  # noqa: E402
from lifecycle.outbox.sinks.bigquery import BigQuerySink, partition_condition  # noqa: E402
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


class MergeSink(BigQuerySink):
    """The former sink, the sweep's baseline: the batch loaded into a staging table (a load job),
    then `MERGE ... ON T.event_id = S.event_id WHEN NOT MATCHED THEN INSERT`; with `pruned`, the
    ON condition also names the batch's day partitions with constants."""

    def __init__(self, *, pruned: bool):
        super().__init__()
        self.pruned = pruned

    def statement(self, table: str, staging_id: str, events: list[Event]) -> str:
        names = ", ".join(field.name for field in self.schema(table))
        values = ", ".join(f"S.{field.name}" for field in self.schema(table))
        days = f" AND ({partition_condition((e.created_at for e in events), 'T.created_at')})" if self.pruned else ""
        return (
            f"MERGE `{self.dataset_id}.{table}` T USING `{staging_id}` S ON T.event_id = S.event_id{days} "
            f"WHEN NOT MATCHED THEN INSERT ({names}) VALUES ({values})"
        )

    def send(self, events, *, timeout=None) -> None:
        from django.core.serializers.json import DjangoJSONEncoder
        from google.cloud import bigquery

        [table] = {event.table for event in events}
        staging_id = f"{self.dataset_id}._staging_{uuid.uuid4().hex}"
        self.client.create_table(bigquery.Table(staging_id, schema=self.schema(table)))
        now = timezone.now()
        body = "\n".join(json.dumps(self._row(event, now), cls=DjangoJSONEncoder) for event in events)
        config = bigquery.LoadJobConfig(
            source_format=bigquery.SourceFormat.NEWLINE_DELIMITED_JSON, schema=self.schema(table)
        )
        self.client.load_table_from_file(io.BytesIO(body.encode()), staging_id, job_config=config).result()
        self.client.query(self.statement(table, staging_id, list(events)), api_method="QUERY").result()
        self.client.delete_table(staging_id, not_found_ok=True)

    def dry_run_bytes(self, events: list[Event]) -> int | None:
        from google.cloud import bigquery

        config = bigquery.QueryJobConfig(dry_run=True)
        job = self.client.query(
            self.statement("bee_decisions", f"{self.dataset_id}.bee_decisions", events), job_config=config
        )
        return job.total_bytes_processed


def seconds(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def median_of(repeats: int, action) -> float:
    return round(statistics.median(seconds(action) for _ in range(repeats)), 3)


def prefill(sink: BigQuerySink, rows: int) -> float:
    """`rows` rows over the last 365 days, oldest first (as they would have arrived), in one statement."""
    if not rows:
        return 0.0
    table = f"{sink.dataset_id}.bee_decisions"
    per_day = max(1, rows // 365)
    return seconds(
        lambda: sink.client.query(
            f"INSERT INTO `{table}` (event_id, kind, created_at, exported_at, payload) "
            "SELECT GENERATE_UUID(), 'bee_decision', "
            f"TIMESTAMP_SUB(CURRENT_TIMESTAMP(), INTERVAL 364 - LEAST(364, DIV(n, {per_day})) DAY), "
            f"CURRENT_TIMESTAMP(), JSON '{json.dumps(PAYLOAD)}' FROM UNNEST(GENERATE_ARRAY(0, {rows - 1})) AS n"
        ).result()
    )


def table_rows(sink: BigQuerySink) -> tuple[int, int]:
    sql = f"SELECT COUNT(*) AS n, COUNT(DISTINCT event_id) AS d FROM `{sink.dataset_id}.bee_decisions`"
    row = next(iter(sink.client.query(sql).result()))
    return row.n, row.d


def new_batch(size: int) -> list[Event]:
    now = timezone.now()
    return [
        Event(
            event_id=uuid.uuid4(),
            kind="bee_decision",
            table="bee_decisions",
            payload={**PAYLOAD, "n": n},
            created_at=now,
        )
        for n in range(size)
    ]


def exporter_batch(sink: BigQuerySink, size: int) -> float:
    """Seconds for the exporter to take `size` pending rows to BigQuery and mark them (the
    outbox emptied first, so every measurement starts from the same PostgreSQL state)."""
    with connection.cursor() as cursor:
        cursor.execute(f"TRUNCATE {OutboxEvent._meta.db_table}")
    now = timezone.now()
    OutboxEvent.objects.bulk_create(
        [OutboxEvent(kind="bee_decision", payload={**PAYLOAD, "n": n}, created_at=now) for n in range(size)],
        batch_size=2000,
    )
    started = time.perf_counter()
    result = outbox_export_batch(sink=sink, batch_size=size, timeout=120)
    elapsed = time.perf_counter() - started
    assert result.exported == size, result
    return elapsed


WAYS = ("merge_full", "merge_pruned", "storage_write", "exporter")


def bench_table_sizes(sizes: list[int], repeats: int, batch: int) -> dict:
    """Every table size gets its own dataset, filled first; then the measurements go round the
    sizes `repeats` times, so a change in the machine's load hits every size alike."""
    points: list[dict[str, Any]] = []
    for size in sizes:
        settings.OUTBOX_BIGQUERY_DATASET = f"bench_sweep_{size}_{int(time.time())}"
        sink = BigQuerySink()
        sink.setup()
        filled = prefill(sink, size)
        table = f"`{sink.dataset_id}.bee_decisions`"

        def count_ids(where: str = "", table: str = table, sink: BigQuerySink = sink) -> None:
            list(sink.client.query(f"SELECT COUNT(DISTINCT event_id) FROM {table} {where}").result())

        full, pruned = MergeSink(pruned=False), MergeSink(pruned=True)
        points.append(
            {
                "sinks": {"merge_full": full, "merge_pruned": pruned, "storage_write": sink},
                "samples": {way: [] for way in WAYS},
                "rows_prefilled": size,
                "prefill_seconds": round(filled, 2),
                # What the emulator (DuckDB) does with a filter on the partitioning column.
                "scan_event_ids_all_days_seconds": median_of(repeats, count_ids),
                "scan_event_ids_one_day_seconds": median_of(
                    repeats, lambda count_ids=count_ids: count_ids(f"WHERE {partition_condition([timezone.now()])}")
                ),
                "dry_run_bytes_merge_full": full.dry_run_bytes(new_batch(10)),
                "dry_run_bytes_merge_pruned": pruned.dry_run_bytes(new_batch(10)),
            }
        )
    # Untimed: each sink's first call (channels, message classes, the emulator's first stream).
    for point in points:
        for sink in point["sinks"].values():
            sink.send(new_batch(100), timeout=120)
        exporter_batch(point["sinks"]["storage_write"], 100)
    for _ in range(repeats):
        for point in points:
            sinks = point["sinks"]
            for way in ("merge_full", "merge_pruned", "storage_write"):
                point["samples"][way].append(seconds(lambda sink=sinks[way]: sink.send(new_batch(batch), timeout=120)))
            point["samples"]["exporter"].append(exporter_batch(sinks["storage_write"], batch))
    for point in points:
        sinks, samples = point.pop("sinks"), point.pop("samples")
        for way in WAYS:
            point[f"{way}_seconds"] = round(statistics.median(samples[way]), 3)
            point[f"{way}_samples"] = [round(sample, 3) for sample in samples[way]]
        point["exporter_events_per_second"] = round(batch / point["exporter_seconds"])
        rows, distinct = table_rows(sinks["storage_write"])
        # Four ways of writing, `repeats` batches each after a warm-up of 100, every event once.
        expected = point["rows_prefilled"] + len(WAYS) * (repeats * batch + 100)
        point["each_event_once"] = rows == distinct == expected
        sinks["storage_write"].client.delete_dataset(
            sinks["storage_write"].dataset_id, delete_contents=True, not_found_ok=True
        )
        for each in sinks.values():
            each.close()
    first, last = points[0], points[-1]
    ratios = {way: round(last[f"{way}_seconds"] / first[f"{way}_seconds"], 2) for way in WAYS}
    return {
        "batch": batch,
        "repeats": repeats,
        "points": points,
        "ratio_largest_vs_empty": ratios,
        "goal_ratio": 1.2,
        "met": ratios["storage_write"] <= 1.2 and ratios["exporter"] <= 1.2,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=20_000)
    parser.add_argument("--batch-sizes", default="500,5000,10000", help="comma-separated; empty: no export run")
    parser.add_argument("--rounds", type=int, default=2000)
    parser.add_argument("--table-sizes", default="0,200000,1000000,2000000", help="comma-separated; empty: no sweep")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--time-travel", action="store_true", help="keep the emulator's copy of the table per write")
    args = parser.parse_args()

    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    with tempfile.TemporaryDirectory() as data_dir:
        emulator = BigQueryEmulator(Path(data_dir), time_travel=args.time_travel).start()
        settings.OUTBOX_BIGQUERY_EMULATOR_URL = emulator.url
        settings.OUTBOX_BIGQUERY_EMULATOR_GRPC = emulator.grpc_address
        settings.OUTBOX_BIGQUERY_PROJECT = emulator.project
        try:
            sizes = [int(size) for size in args.table_sizes.split(",") if size]
            result = {
                "record_event": bench_record_event(args.rounds),
                "export": [bench_export(args.events, int(size)) for size in args.batch_sizes.split(",") if size],
                "export_goal_events_per_second": 5000,
                "table_sizes": bench_table_sizes(sizes, args.repeats, 10_000) if sizes else None,
                "emulator_time_travel": args.time_travel,
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

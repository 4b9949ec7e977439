"""Scaling benchmark: what the shared services pay for many instances. Prints JSON.

- Recovery pass: one pass (the steps of LIFECYCLE_RECOVERY_STEPS, as the workers' periodic job
  runs it) with `--instances` registered live instances (a few of them lost: no heartbeat) and
  `--streams` bee queue streams (a few holding a message claimed past the visibility timeout),
  first alone and then beside `--other-keys` unrelated Redis keys (sessions, as many users
  leave); per step its seconds and the Redis commands it sent. The baseline is the same pass
  without the unrelated keys, in the same run: a step whose cost grows with them scans more
  than its own data.
- Outbox exporter: `--events` pending events (inserted by one INSERT ... SELECT) exported by
  `--exporters` threads racing as several workers do (each its own PostgreSQL connection,
  `SELECT ... FOR UPDATE SKIP LOCKED` batches of `--batch-size`) into a sink that only counts
  event ids: events/s, that each event was sent exactly once, the batch's SELECT at the start
  and at the end of the run, and the pending-metrics query (outbox_stats) with all pending.

Run: .venv/bin/python bench/scaling.py [--instances 1000] [--streams 10000] [--stale-streams 50]
     [--other-keys 200000] [--events 1000000] [--exporters 4] [--batch-size 10000]
It uses its own database (TEST_DATABASE_NAME, default bench_omk_scaling), created and dropped
here, and flushes the Redis db settings.test picks (REDIS_TEST_DB, default 15) before and after
(not with --skip-recovery: the exporter's part uses no Redis).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import statistics
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.test")
os.environ.setdefault("TEST_DATABASE_NAME", "bench_omk_scaling")
os.environ.setdefault("LOG_LEVEL", "ERROR")

import django  # noqa: E402

django.setup()

from django.conf import settings  # noqa: E402
from django.db import connection, connections  # noqa: E402
from django.utils import timezone  # noqa: E402

from core.redis import redis_client  # noqa: E402
from lifecycle.models import Instance, InstanceState  # noqa: E402
from lifecycle.outbox.models import OutboxEvent  # noqa: E402
from lifecycle.outbox.sinks import OutboxSink  # noqa: E402
from lifecycle.registry import heartbeat_key  # noqa: E402


def redis_calls() -> int:
    """Commands Redis has run so far (all clients): the difference around a step is its cost."""
    return sum(int(stats["calls"]) for stats in redis_client().info("commandstats").values())


# --- recovery pass -------------------------------------------------------------------------------


def fill_registry(instances: int, lost: int) -> None:
    long_ago = timezone.now() - dt.timedelta(hours=1)
    Instance.objects.bulk_create(
        [
            Instance(
                id=f"bench-{n}",
                kind="web" if n % 4 else "worker",
                host="bench",
                pid=n,
                platform="cloud_run",
                version="bench",
                state=InstanceState.READY,
                started_at=long_ago,
                state_changed_at=long_ago,
            )
            for n in range(instances)
        ],
        batch_size=1000,
    )
    client = redis_client()
    with client.pipeline(transaction=False) as pipe:
        for n in range(lost, instances):
            pipe.set(heartbeat_key(f"bench-{n}"), "ready", px=600_000)
        pipe.execute()


def fill_queues(streams: int, stale: int) -> None:
    from lifecycle.queues.services import queue_ack, queue_claim, queue_publish

    for n in range(streams):
        queue_publish(name=f"bench-{n}", body="{}")
    # Claimed and never acked: past the (shortened) visibility timeout, the pass re-delivers them.
    for n in range(stale):
        queue_claim(name=f"bench-{n}", consumer="gone")
    # One stream in ten read by a consumer that acks: a group exists, nothing is pending.
    for n in range(stale, streams, 10):
        messages = queue_claim(name=f"bench-{n}", consumer="reader")
        queue_ack(name=f"bench-{n}", ids=[m.id for m in messages], consumer="reader")


def fill_other_keys(count: int) -> None:
    client = redis_client()
    for start in range(0, count, 10_000):
        with client.pipeline(transaction=False) as pipe:
            for n in range(start, min(count, start + 10_000)):
                pipe.set(f"omk:session:bench{n}", "{}", px=600_000)
            pipe.execute()


def one_pass() -> dict:
    from lifecycle.conf import lifecycle_settings
    from lifecycle.steps import StepContext, load_steps, run_step

    steps = load_steps(lifecycle_settings.RECOVERY_STEPS, StepContext(instance_id=None, kind="worker"))
    out = {}
    for step in steps:
        calls = redis_calls()
        started = time.perf_counter()
        result = run_step(step, deadline=time.monotonic() + 60)
        seconds = time.perf_counter() - started
        # INFO itself is one command.
        out[step.name] = {
            "seconds": round(seconds, 4),
            "redis_commands": redis_calls() - calls - 1,
            "count": result.count,
            "status": result.status,
        }
    out["total_seconds"] = round(sum(s["seconds"] for s in out.values()), 4)
    return out


def bench_recovery(instances: int, streams: int, stale: int, other_keys: int) -> dict:
    lost = max(1, instances // 100)
    settings.QUEUES_VISIBILITY_TIMEOUT_SECONDS = 0.5
    fill_registry(instances, lost)
    started = time.perf_counter()
    fill_queues(streams, stale)
    fill_seconds = time.perf_counter() - started
    time.sleep(0.6)
    first = one_pass()
    # The same pass again (nothing left to re-deliver, no instance left to mark lost): its steady cost.
    alone = one_pass()
    fill_other_keys(other_keys)
    beside = one_pass()
    return {
        "instances": instances,
        "instances_lost": lost,
        "streams": streams,
        "streams_with_stale_messages": stale,
        "other_keys": other_keys,
        "redis_keys": redis_client().dbsize(),
        "streams_filled_seconds": round(fill_seconds, 1),
        "first_pass": first,
        "steady_pass": alone,
        "steady_pass_beside_other_keys": beside,
    }


# --- outbox exporter -----------------------------------------------------------------------------


class CountingSink(OutboxSink):
    """Accepts every batch at once and counts each event id it was sent."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.seen: collections.Counter = collections.Counter()

    def send(self, events, *, timeout=None) -> None:
        with self.lock:
            self.seen.update(event.event_id for event in events)


def fill_outbox(events: int) -> float:
    started = time.perf_counter()
    with connection.cursor() as cursor:
        cursor.execute(
            f"""INSERT INTO {OutboxEvent._meta.db_table}
                  (id, kind, payload, created_at, attempts, last_error, stream)
                SELECT gen_random_uuid(), (ARRAY['bee_decision','llm_conversation','lifecycle_event'])[n %% 3 + 1],
                       jsonb_build_object('bee', 'scout-' || n, 'decision', 'explore', 'score', 0.82),
                       now() - interval '1 hour' + n * interval '1 microsecond', 0, '', ''
                FROM generate_series(1, %s) AS n""",
            [events],
        )
        cursor.execute(f"ANALYZE {OutboxEvent._meta.db_table}")
    return time.perf_counter() - started


def timed(action) -> float:
    started = time.perf_counter()
    action()
    return time.perf_counter() - started


def bench_exporter(events: int, exporters: int, batch_size: int) -> dict:
    from lifecycle.outbox.exporter import outbox_export_batch
    from lifecycle.outbox.selectors import outbox_stats

    fill_seconds = fill_outbox(events)
    events = OutboxEvent.objects.count()
    stats_seconds = min(timed(outbox_stats) for _ in range(3))
    with connection.cursor() as cursor:
        cursor.execute(
            f"EXPLAIN SELECT id FROM {OutboxEvent._meta.db_table} WHERE exported_at IS NULL AND quarantined_at IS NULL "
            "AND stream = '' AND (next_attempt_at IS NULL OR next_attempt_at <= now()) ORDER BY created_at LIMIT %s "
            "FOR UPDATE SKIP LOCKED",
            [batch_size],
        )
        plan = [row[0] for row in cursor.fetchall()]
    sink = CountingSink()
    batches: list[tuple[float, float]] = []  # (start offset, seconds)
    lock = threading.Lock()
    started = time.perf_counter()

    def run() -> None:
        try:
            while True:
                batch_started = time.perf_counter()
                result = outbox_export_batch(sink=sink, batch_size=batch_size, timeout=60)
                if result.selected == 0:
                    return
                with lock:
                    batches.append((batch_started - started, time.perf_counter() - batch_started))
        finally:
            connections.close_all()

    threads = [threading.Thread(target=run) for _ in range(exporters)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    seconds = time.perf_counter() - started
    batches.sort()
    full = [s for _, s in batches]
    tenth = max(1, len(full) // 10)
    left = OutboxEvent.objects.filter(exported_at__isnull=True).count()
    return {
        "events": events,
        "exporters": exporters,
        "batch_size": batch_size,
        "fill_seconds": round(fill_seconds, 1),
        "outbox_stats_seconds_all_pending": round(stats_seconds, 4),
        "batch_select_plan": plan,
        "seconds": round(seconds, 1),
        "events_per_second": round(events / seconds),
        "batches": len(batches),
        # Full batches only, by when they started: a batch's cost must not grow as the table fills
        # with exported rows.
        "batch_seconds_first_tenth_median": round(statistics.median(full[:tenth]), 3),
        "batch_seconds_last_tenth_median": round(statistics.median(full[-tenth:]), 3),
        "sent_once": sum(1 for count in sink.seen.values() if count == 1),
        "sent_more_than_once": sum(1 for count in sink.seen.values() if count > 1),
        "left_pending": left,
        **stats_after_export(),
    }


def former_outbox_stats() -> None:
    """The metrics' query before it read through partial indexes: one aggregate over every row
    not exported, which only a scan of the whole table answers."""
    from django.db.models import Count, Min, Q

    OutboxEvent.objects.filter(exported_at__isnull=True).aggregate(
        pending=Count("id", filter=Q(quarantined_at__isnull=True)),
        quarantined=Count("id", filter=Q(quarantined_at__isnull=False)),
        oldest=Min("created_at", filter=Q(quarantined_at__isnull=True)),
    )


def stats_after_export() -> dict:
    """The metrics' query with every row exported (the retention's rows kept), as the exporter
    loop runs it after each pass: right after the export (the index still holds the rows' dead
    versions) and once (auto)vacuum has run; the former query beside it."""
    from lifecycle.outbox.selectors import outbox_stats

    def best(action) -> float:
        return round(min(timed(action) for _ in range(3)), 4)

    out = {
        "outbox_stats_seconds_none_pending": best(outbox_stats),
        "former_seconds_none_pending": best(former_outbox_stats),
    }
    with connection.cursor() as cursor:
        cursor.execute(f"VACUUM ANALYZE {OutboxEvent._meta.db_table}")
    out["outbox_stats_seconds_none_pending_vacuumed"] = best(outbox_stats)
    out["former_seconds_none_pending_vacuumed"] = best(former_outbox_stats)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--instances", type=int, default=1000)
    parser.add_argument("--streams", type=int, default=10_000)
    parser.add_argument("--stale-streams", type=int, default=50)
    parser.add_argument("--other-keys", type=int, default=200_000)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--exporters", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=10_000)
    parser.add_argument("--skip-recovery", action="store_true")
    parser.add_argument("--skip-exporter", action="store_true")
    args = parser.parse_args()

    old_name = connection.settings_dict["NAME"]
    connection.creation.create_test_db(verbosity=0, autoclobber=True, keepdb=False)
    # Only the recovery part uses Redis.
    uses_redis = not args.skip_recovery
    if uses_redis:
        redis_client().flushdb()
    try:
        result = {
            "recovery": None
            if args.skip_recovery
            else bench_recovery(args.instances, args.streams, args.stale_streams, args.other_keys),
            "exporter": None if args.skip_exporter else bench_exporter(args.events, args.exporters, args.batch_size),
            "cpu_count": os.cpu_count(),
            "load_average_1m": round(os.getloadavg()[0], 2),
            "measured_at": timezone.now().isoformat(timespec="seconds"),
        }
    finally:
        if uses_redis:
            redis_client().flushdb()
        connections.close_all()
        connection.creation.destroy_test_db(old_name, verbosity=0)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()

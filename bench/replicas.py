"""Benchmark: what REDIS_MIN_REPLICAS_ACK costs per durable Redis write. Prints JSON.

    .venv/bin/python bench/replicas.py [--writes 2000] [--rounds 5]

Starts a Redis primary and its replica of its own (chaos.topology.RedisServer, no persistence,
free ports) and times, in one process, the service's own durable writes: a board post
(hive.services.board_post_create) and a queue publish (lifecycle.queues.services.queue_publish),
each `--writes` times per round with OMK_REDIS_MIN_REPLICAS_ACK = 0 (the script alone) and 1
(the script, then WAIT 1 on the same connection, one round trip). Rounds alternate which setting
goes first; the figures are the medians over rounds of each round's p50 and p99 per write (ms).
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.test")

import django

django.setup()

import redis  # noqa: E402
from django.conf import settings  # noqa: E402
from django.test import override_settings  # noqa: E402

from chaos.topology import RedisServer, wait_until  # noqa: E402
from hive.services import board_post_create  # noqa: E402
from lifecycle.queues.services import queue_publish  # noqa: E402

WRITES: dict[str, Callable[[], object]] = {
    "board_post": lambda: board_post_create(author="bench", body="a post of the benchmark"),
    "queue_publish": lambda: queue_publish(name="bench", body="a message of the benchmark"),
}


def timed(write: Callable[[], object], count: int) -> tuple[float, float]:
    samples = []
    for _ in range(count):
        started = time.perf_counter()
        write()
        samples.append((time.perf_counter() - started) * 1000)
    samples.sort()
    return samples[len(samples) // 2], samples[int(len(samples) * 0.99)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--writes", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()

    root = Path(tempfile.mkdtemp(prefix="omk-bench-replicas-"))
    primary = RedisServer(root / "primary", persistent=False, extra_args=["--repl-diskless-sync-delay", "0"])
    primary.start()
    replica = RedisServer(
        root / "replica", persistent=False, extra_args=["--replicaof", "127.0.0.1", str(primary.port)]
    )
    replica.start()
    try:
        assert wait_until(lambda: redis.Redis(port=replica.port).info("replication")["master_link_status"] == "up", 15)
        caches = copy.deepcopy(settings.CACHES)
        caches["default"]["LOCATION"] = primary.url
        results: dict[str, dict[int, list[tuple[float, float]]]] = {name: {0: [], 1: []} for name in WRITES}
        with override_settings(CACHES=caches):
            for name, write in WRITES.items():
                for acks in (0, 1):  # warm-up: connections, scripts loaded
                    with override_settings(OMK_REDIS_MIN_REPLICAS_ACK=acks):
                        timed(write, 100)
                for round_number in range(args.rounds):
                    order = (0, 1) if round_number % 2 == 0 else (1, 0)
                    for acks in order:
                        with override_settings(OMK_REDIS_MIN_REPLICAS_ACK=acks):
                            results[name][acks].append(timed(write, args.writes))
                redis.Redis(port=primary.port).flushall()

        def summary(rounds: list[tuple[float, float]]) -> dict[str, float]:
            return {
                "p50_ms": round(statistics.median(r[0] for r in rounds), 3),
                "p99_ms": round(statistics.median(r[1] for r in rounds), 3),
            }

        report = {
            "benchmark": "replicas",
            "python": platform.python_version(),
            "redis_py": redis.__version__,
            "redis_server": redis.Redis(port=primary.port).info("server")["redis_version"],
            "cpus": os.cpu_count(),
            "writes_per_round": args.writes,
            "rounds": args.rounds,
        }
        for name, by_acks in results.items():
            without, with_wait = summary(by_acks[0]), summary(by_acks[1])
            report[name] = {
                "min_replicas_ack_0": without,
                "min_replicas_ack_1": with_wait,
                "wait_adds_p50_ms": round(with_wait["p50_ms"] - without["p50_ms"], 3),
                "wait_adds_p99_ms": round(with_wait["p99_ms"] - without["p99_ms"], 3),
            }
        print(json.dumps(report, indent=2))
    finally:
        replica.stop()
        primary.stop()


if __name__ == "__main__":
    main()

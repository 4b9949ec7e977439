"""Benchmark: lifecycle.locks against redis-py's Lock, measured in one run, interleaved. Prints JSON.

    DJANGO_SETTINGS_MODULE=settings.test REDIS_TEST_DB=10 .venv/bin/python bench/locks.py

1. Uncontended: acquire+release cycles per second on one key, one process (ours includes the
   fence). Many short runs alternate which lock goes first; figures are medians over runs.
2. Contended: 4 processes loop on one key for `--seconds`: acquire, GET a counter, SET it + 1,
   release. Reports cycles/s, the worst and p99 acquire wait over all processes, and whether the
   counter equals the number of grants (mutual exclusion). redis-py polls with sleep=0.001. Ours
   runs with the default strict FIFO hand-off and with LOCK_FAIR_AFTER = 5 ms (bounded barging).

It flushes nothing but its own keys (bench:*, omk:{lock:bench*}); run it against a Redis db of
your own all the same.
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing as mp
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "settings.test")

import django

django.setup()

import redis  # noqa: E402

from core.redis import redis_client  # noqa: E402
from lifecycle.locks import distributed_lock  # noqa: E402


def cleanup() -> None:
    client = redis_client()
    for pattern in ("bench:*", "omk:{lock:bench*"):
        keys = list(client.scan_iter(pattern))
        if keys:
            client.delete(*keys)


def uncontended(kind: str, cycles: int) -> float:
    client = redis_client()
    started = time.perf_counter()
    if kind == "ours":
        for _ in range(cycles):
            with distributed_lock.acquire("bench-solo", ttl=30):
                pass
    else:
        for _ in range(cycles):
            with client.lock("bench:redispy-solo", timeout=30):
                pass
    return cycles / (time.perf_counter() - started)


def contender(kind: str, seconds: float, start: Any, results: Any) -> None:
    if kind == "ours-fair-after-5ms":
        from django.test.utils import override_settings

        override_settings(LOCKS_FAIR_AFTER=0.005).enable()
    client = redis_client()  # a fresh pool in this process (redis-py resets it after fork)
    waits: list[float] = []
    # One untimed cycle on a key of its own before the start line: this process's first TCP
    # connect and handshake, and its first pass through each code path, would otherwise dominate
    # the worst wait of either lock (and of whoever queues behind it).
    if kind.startswith("ours"):
        with distributed_lock.acquire(f"bench-warm-{os.getpid()}", ttl=10):
            pass
    else:
        with client.lock(f"bench:redispy-warm-{os.getpid()}", timeout=10):
            pass
    start.wait()
    deadline = time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        asked = time.perf_counter()
        if kind.startswith("ours"):
            with distributed_lock.acquire("bench-shared", ttl=10, timeout=30):
                waits.append(time.perf_counter() - asked)
                client.set("bench:counter", int(client.get("bench:counter") or 0) + 1)
        else:
            with client.lock("bench:redispy-shared", timeout=10, sleep=0.001, blocking_timeout=30):
                waits.append(time.perf_counter() - asked)
                client.set("bench:counter", int(client.get("bench:counter") or 0) + 1)
    results.put(waits)


def contended(kind: str, processes: int, seconds: float) -> dict[str, Any]:
    cleanup()
    # What the children inherit goes to the permanent generation, as a pre-fork server would do:
    # otherwise their first full collections, in step since their heaps are alike, stall whoever
    # holds the lock for 100-200 ms in every run, whichever lock it is.
    gc.freeze()
    ctx = mp.get_context("fork")
    start, results = ctx.Event(), ctx.Queue()
    workers = [ctx.Process(target=contender, args=(kind, seconds, start, results)) for _ in range(processes)]
    for worker in workers:
        worker.start()
    time.sleep(0.3)  # let every process reach the start line
    start.set()
    per_process = [results.get(timeout=seconds + 60) for _ in workers]
    for worker in workers:
        worker.join()
    waits = sorted(w for ws in per_process for w in ws)
    grants = len(waits)
    counter = int(redis_client().get("bench:counter") or 0)
    return {
        "cycles_per_s": grants / seconds,
        "grants_per_process": [len(ws) for ws in per_process],
        # Fairness: 1.0 when every process got as many grants as the others.
        "grants_min_over_max": min(len(ws) for ws in per_process) / max(1, max(len(ws) for ws in per_process)),
        "wait_max_ms": waits[-1] * 1000 if waits else None,
        "wait_p99_ms": waits[int(0.99 * (grants - 1))] * 1000 if waits else None,
        "wait_p50_ms": waits[grants // 2] * 1000 if waits else None,
        "mutual_exclusion": counter == grants,
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=5, help="contended runs per lock")
    parser.add_argument("--solo-rounds", type=int, default=20, help="uncontended runs per lock")
    parser.add_argument("--cycles", type=int, default=1000, help="cycles per uncontended run")
    parser.add_argument("--processes", type=int, default=4)
    parser.add_argument("--seconds", type=float, default=2.0)
    args = parser.parse_args()
    cleanup()
    uncontended("ours", 200)  # warm up: scripts loaded, connections open
    uncontended("redis-py", 200)

    solo: dict[str, list[float]] = {"ours": [], "redis-py": []}
    duel: dict[str, list[dict[str, Any]]] = {"ours": [], "ours-fair-after-5ms": [], "redis-py": []}
    # Short runs, alternating which goes first: the machine's background load hits both alike.
    for round_ in range(args.solo_rounds):
        for kind in ["ours", "redis-py"] if round_ % 2 == 0 else ["redis-py", "ours"]:
            solo[kind].append(uncontended(kind, args.cycles))
    for round_ in range(args.rounds):
        kinds = ["ours", "redis-py", "ours-fair-after-5ms"]
        for kind in kinds if round_ % 2 == 0 else kinds[::-1]:
            duel[kind].append(contended(kind, args.processes, args.seconds))
    cleanup()

    def summary(kind: str) -> dict[str, Any]:
        runs = duel[kind]
        return {
            "cycles_per_s_median": statistics.median(r["cycles_per_s"] for r in runs),
            "wait_max_ms_worst": max(r["wait_max_ms"] for r in runs),
            "wait_max_ms_median": statistics.median(r["wait_max_ms"] for r in runs),
            "wait_p99_ms_median": statistics.median(r["wait_p99_ms"] for r in runs),
            "wait_p50_ms_median": statistics.median(r["wait_p50_ms"] for r in runs),
            "grants_min_over_max_median": statistics.median(r["grants_min_over_max"] for r in runs),
            "mutual_exclusion_all_runs": all(r["mutual_exclusion"] for r in runs),
            "runs": runs,
        }

    ours_solo, theirs_solo = statistics.median(solo["ours"]), statistics.median(solo["redis-py"])
    ratios = [a / b for a, b in zip(solo["ours"], solo["redis-py"], strict=True)]
    ours, theirs, barging = summary("ours"), summary("redis-py"), summary("ours-fair-after-5ms")
    report = {
        "benchmark": "lifecycle.locks vs redis.lock.Lock",
        "python": platform.python_version(),
        "redis_py": redis.__version__,
        "redis_server": redis_client().info("server")["redis_version"],
        "cpus": os.cpu_count(),
        "uncontended": {
            "rounds": args.solo_rounds,
            "cycles_per_round": args.cycles,
            "ours_cycles_per_s_median": round(ours_solo),
            "redis_py_cycles_per_s_median": round(theirs_solo),
            "ratio_of_medians": round(ours_solo / theirs_solo, 3),
            "ratio_median_of_rounds": round(statistics.median(ratios), 3),
            "ratio_per_round": [round(r, 3) for r in ratios],
            "goal": ">= 0.95",
        },
        "contended": {
            "rounds": args.rounds,
            "processes": args.processes,
            "seconds_per_run": args.seconds,
            "redis_py_sleep": 0.001,
            "ours": summary_round(ours),
            "redis_py": summary_round(theirs),
            # The same lock with LOCK_FAIR_AFTER = 0.005: a release only wakes a waiter younger
            # than 5 ms, newcomers may barge meanwhile (the default, 0, hands over at every release).
            "ours_fair_after_5ms": summary_round(barging),
            "throughput_ratio": round(ours["cycles_per_s_median"] / theirs["cycles_per_s_median"], 3),
            "goal": "ours worst wait <= 20 ms, throughput ratio >= 1, mutual exclusion",
        },
    }
    print(json.dumps(report, indent=2))


def summary_round(data: Any) -> Any:
    if isinstance(data, float):
        return round(data, 3)
    if isinstance(data, dict):
        return {k: summary_round(v) for k, v in data.items()}
    if isinstance(data, list):
        return [summary_round(v) for v in data]
    return data


if __name__ == "__main__":
    main()

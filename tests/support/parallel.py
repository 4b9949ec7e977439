"""Requests from several OS processes at once, through the whole Django stack (middleware, API,
services) against the real PostgreSQL and Redis: what several gunicorn workers do, without the
seconds a real server takes to start.

The children are forked from the test process after its connections are closed, so each opens
its own PostgreSQL and Redis connections; they wait on one barrier and then fire together.
"""

from __future__ import annotations

import multiprocessing
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from django.db import connections


def _child(
    call: Callable[[Any], Any], jobs: Sequence[Any], barrier: Any, results: Any, index: int, threads: int
) -> None:
    # The parent's connection pool came along with the fork: its sockets are the parent's, its
    # threads did not. Forget it (closing it would close the parent's connections); this process
    # opens a pool of its own on first use.
    from django.db.backends.postgresql.base import DatabaseWrapper

    DatabaseWrapper._connection_pools.clear()  # type: ignore[attr-defined]
    for connection in connections.all(initialized_only=True):
        connection.connection = None
    # The last thread of this process to arrive waits for every other process (the barrier's
    # action); then all threads of all processes are released together.
    start = threading.Barrier(len(jobs), action=barrier.wait)

    def run(job: Any) -> Any:
        start.wait()
        try:
            return call(job)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(threads) as pool:
        out = list(pool.map(run, jobs))
    results.put((index, out))


def in_processes(call: Callable[[Any], Any], jobs: Sequence[Any], *, processes: int) -> list[Any]:
    """Run `call(job)` for every job, spread over `processes` forked processes (each with a
    thread per job), all released at once. Returns the results in job order."""
    connections.close_all()
    context = multiprocessing.get_context("fork")
    barrier = context.Barrier(processes)
    results = context.Queue()
    chunks = [list(jobs[i::processes]) for i in range(processes)]
    children = [
        context.Process(target=_child, args=(call, chunk, barrier, results, index, len(chunk)))
        for index, chunk in enumerate(chunks)
    ]
    for child in children:
        child.start()
    collected = dict(results.get(timeout=120) for _ in children)
    for child in children:
        child.join(timeout=30)
        assert child.exitcode == 0, f"child process exited with {child.exitcode}"
    ordered: list[Any] = [None] * len(jobs)
    for index, out in collected.items():
        for position, value in enumerate(out):
            ordered[index + position * processes] = value
    return ordered

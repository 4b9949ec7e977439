"""Requests in flight across a gunicorn master's workers: one counter in shared memory.

The master creates it before forking (omk/gunicorn.conf.py calls `create()`), every worker
inherits it, the request middleware counts in and out, and the shutdown report reads how many
requests were still running when the listener closed. Outside gunicorn it does not exist and
counting is a no-op.
"""

from __future__ import annotations

import multiprocessing
from typing import Any

_counter: Any = None
# Requests ended since the master started (under the counter's lock): the generation of a
# heartbeat, so that a beat taken earlier never replaces a later one (lifecycle.registry).
_ended: Any = None


def create() -> None:
    global _counter, _ended
    if _counter is None:
        _counter = multiprocessing.Value("i", 0)
        _ended = multiprocessing.Value("q", 0, lock=False)


def enter() -> None:
    if _counter is not None:
        with _counter.get_lock():
            _counter.value += 1


def leave() -> tuple[int, int] | None:
    """Count a request out; return (requests still in flight, requests ended), or None outside
    gunicorn."""
    if _counter is None:
        return None
    with _counter.get_lock():
        _counter.value -= 1
        _ended.value += 1
        return _counter.value, _ended.value


def snapshot() -> tuple[int, int]:
    """(requests in flight, requests ended), read together."""
    if _counter is None:
        return 0, 0
    with _counter.get_lock():
        return _counter.value, _ended.value


def count() -> int:
    return _counter.value if _counter is not None else 0

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


def create() -> None:
    global _counter
    if _counter is None:
        _counter = multiprocessing.Value("i", 0)


def enter() -> None:
    if _counter is not None:
        with _counter.get_lock():
            _counter.value += 1


def leave() -> None:
    if _counter is not None:
        with _counter.get_lock():
            _counter.value -= 1


def count() -> int:
    return _counter.value if _counter is not None else 0

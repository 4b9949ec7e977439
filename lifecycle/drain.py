"""The draining flag shared by a gunicorn master and its workers.

A file, not process memory: the master sets it on SIGTERM and every worker (and
`manage.py drain` from a preStop hook) sees it at once, with one stat() per readiness probe.
"""

import os
from pathlib import Path

DRAIN_FLAG_ENV = "OMK_DRAIN_FLAG"


def drain_flag_path() -> Path | None:
    path = os.environ.get(DRAIN_FLAG_ENV)
    return Path(path) if path else None


def is_draining() -> bool:
    path = drain_flag_path()
    return path is not None and path.exists()


def mark_draining(path: Path | None = None) -> None:
    path = path or drain_flag_path()
    if path is None:
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def clear_draining(path: Path | None = None) -> None:
    path = path or drain_flag_path()
    if path is not None:
        path.unlink(missing_ok=True)

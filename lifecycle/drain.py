"""The draining flag shared by a gunicorn master and its workers.

A file, not process memory: the master sets it on SIGTERM and every worker (and
`manage.py drain` from a preStop hook) sees it at once, with one stat() per readiness probe.
"""

import os
import time
from pathlib import Path

DRAIN_FLAG_ENV = "OMK_DRAIN_FLAG"
# Set by the gunicorn master: the file its first worker creates once startup recovery is done.
RECOVERED_FLAG_ENV = "OMK_RECOVERED_FLAG"


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
    if not path.exists():
        # The time the drain began: a preStop hook's drain counts against the same budget.
        path.write_text(repr(time.time()))


def drain_started_at(path: Path | None = None) -> float | None:
    """When the drain began (time.time()), or None if the instance is not draining."""
    path = path or drain_flag_path()
    if path is None:
        return None
    try:
        return float(path.read_text() or path.stat().st_mtime)
    except (OSError, ValueError):
        return None


def clear_draining(path: Path | None = None) -> None:
    path = path or drain_flag_path()
    if path is not None:
        path.unlink(missing_ok=True)


def recovered_flag_path() -> Path | None:
    path = os.environ.get(RECOVERED_FLAG_ENV)
    return Path(path) if path else None


def is_recovered() -> bool:
    """True once startup recovery is done; always True outside a gunicorn instance."""
    path = recovered_flag_path()
    return path is None or path.exists()

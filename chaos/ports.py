"""Ports for the servers the tests and the chaos harness start, that nothing else takes first.

A port found free with bind(("127.0.0.1", 0)) and closed again is the kernel's ephemeral range:
the next outgoing connection of any process on the machine (a PostgreSQL or Redis client) may
get it as its source port, and another run's bind(0) may be handed it too. The server started
on it a moment later then fails to bind (gunicorn gives up after five tries). Ports here come
from below that range, where the kernel never picks one by itself, and each is reserved for the
life of the process that chose it: a lock on the port's byte of one shared file, which every
process using this module honours and the kernel releases when the process ends.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import random
import socket
import tempfile
import threading
from pathlib import Path

LOCK_FILE = Path(tempfile.gettempdir()) / "omk-ports.lock"
# Ports under this one are for services with fixed ports (PostgreSQL, Redis, `make run`'s 8000,
# the BigQuery emulator's 9050/9060).
LOWEST = 15000

_lock = threading.Lock()
_fd: int | None = None
# POSIX record locks are the process's: a second lock on a byte it holds succeeds, so the
# process keeps its own list.
_reserved: set[int] = set()


def ephemeral_range() -> tuple[int, int]:
    try:
        low, high = Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()
        return int(low), int(high)
    except (OSError, ValueError):
        return 32768, 60999  # Linux's default


def reservable_range() -> tuple[int, int]:
    """The ports below the ephemeral range (above it when that starts too low to leave room)."""
    low, high = ephemeral_range()
    if low - LOWEST >= 2000:
        return LOWEST, low - 1
    return high + 1, 65535


def _lock_fd() -> int:
    global _fd
    if _fd is None:
        fd = os.open(LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o666)
        # Every user's runs share it (the umask took the others' write bit).
        with contextlib.suppress(OSError):
            os.fchmod(fd, 0o666)
        _fd = fd
    return _fd


def _bindable(port: int) -> bool:
    """Nothing on this machine holds the port now (no SO_REUSEADDR: a TIME_WAIT counts too)."""
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A port no process using this module holds and nothing listens on, reserved until this
    process exits. The server it is for may bind it at any time after, as often as it restarts."""
    low, high = reservable_range()
    with _lock:
        fd = _lock_fd()
        for _ in range(1000):
            port = random.randint(low, high)
            if port in _reserved:
                continue
            try:
                fcntl.lockf(fd, fcntl.LOCK_EX | fcntl.LOCK_NB, 1, port)
            except OSError:
                continue  # another process's
            if _bindable(port):
                _reserved.add(port)
                return port
            fcntl.lockf(fd, fcntl.LOCK_UN, 1, port)
    raise RuntimeError(f"no free port in {low}-{high}")

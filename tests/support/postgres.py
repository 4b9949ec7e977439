"""Server-side faults on the tests' PostgreSQL, as a restart or a failover causes them."""

from __future__ import annotations

import time

import psycopg


def admin_connect() -> psycopg.Connection:
    return psycopg.connect(host="127.0.0.1", user="postgres", dbname="postgres", autocommit=True)


def backends_terminate(admin: psycopg.Connection, pids: list[int]) -> None:
    """Terminate these server processes and wait until they are gone (pg_terminate_backend only
    signals them): their clients' connections are broken, as after a server restart."""
    admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", [pids])
    deadline = time.monotonic() + 10
    while admin.execute("SELECT count(*) FROM pg_stat_activity WHERE pid = ANY(%s)", [pids]).fetchone()[0]:
        assert time.monotonic() < deadline, f"backends {pids} still there after 10 s"
        time.sleep(0.05)

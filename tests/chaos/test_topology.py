"""The harness's own PostgreSQL: a crash is prompt whatever its children do."""

import os
import signal
import time

import psycopg
import pytest

from chaos.topology import PostgresCluster


@pytest.fixture
def cluster(tmp_path):
    cluster = PostgresCluster(tmp_path / "pg")
    cluster.init()
    cluster.start()
    yield cluster
    cluster.remove()


@pytest.mark.slow
def test_postgres_cluster_crash__a_child_that_ignores_the_stop_does_not_delay_it(cluster):
    conn = psycopg.connect(cluster.url("postgres"), autocommit=True)
    backend = conn.info.backend_pid
    # A stopped process acts on no signal but SIGKILL: PostgreSQL's immediate stop waits 5 s for
    # it before its own SIGKILL, as it waits for a child stuck in the kernel (a long fsync).
    os.kill(backend, signal.SIGSTOP)
    started = time.monotonic()
    cluster.crash()
    took = time.monotonic() - started
    assert took < PostgresCluster.CRASH_SECONDS + 1.5, f"the crash took {took:.1f} s"
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(cluster.url("postgres"), connect_timeout=2)

    # Started again once every process is gone (the restart fault's path).
    cluster.wait_stopped(timeout=30)
    cluster.start()
    with psycopg.connect(cluster.url("postgres")) as again:
        assert again.execute("SELECT 1").fetchone() == (1,)
    conn.close()

"""Servers of the core tests: Redis servers in the states a failover leaves them in."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
import redis

from chaos.netproxy import TcpProxy
from chaos.topology import RedisServer, free_port, wait_until

# A DEBUG RELOAD of this many keys at this delay each keeps the server LOADING for up to 10 s;
# the delay is lifted once the test has seen what it needed.
LOADING_KEYS = 2000
KEY_LOAD_DELAY_US = 5000


@dataclass
class RedisServers:
    primary: RedisServer
    replica: RedisServer
    stale: RedisServer
    loading: RedisServer
    proxy: TcpProxy


@pytest.fixture(scope="module")
def redis_servers(tmp_path_factory) -> Iterator[RedisServers]:
    """A primary and its replica (READONLY), a replica whose primary is gone with
    replica-serve-stale-data off (MASTERDOWN), a server that can be made to load slowly
    (LOADING: see LOADING_KEYS), and a proxy to the primary that can reset connections."""
    root = tmp_path_factory.mktemp("redis-failover")
    primary = RedisServer(root / "primary", persistent=False, extra_args=["--repl-diskless-sync-delay", "0"])
    primary.start()
    replica = RedisServer(
        root / "replica", persistent=False, extra_args=["--replicaof", "127.0.0.1", str(primary.port)]
    )
    stale = RedisServer(
        root / "stale",
        persistent=False,
        extra_args=["--replicaof", "127.0.0.1", str(free_port()), "--replica-serve-stale-data", "no"],
    )
    loading = RedisServer(
        root / "loading",
        persistent=False,
        extra_args=["--enable-debug-command", "yes", "--loading-process-events-interval-bytes", "1024"],
    )
    started = [primary]
    try:
        for server in (replica, stale, loading):
            server.start()
            started.append(server)
        assert wait_until(lambda: redis.Redis(port=replica.port).info("replication")["master_link_status"] == "up", 15)
        admin = redis.Redis(port=loading.port)
        admin.execute_command("DEBUG", "POPULATE", LOADING_KEYS, "k", 100)
        proxy = TcpProxy(primary.port).start()
        yield RedisServers(primary, replica, stale, loading, proxy)
        proxy.close()
    finally:
        for server in started:
            server.stop()

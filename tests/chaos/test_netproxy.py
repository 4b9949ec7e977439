"""chaos/netproxy.py: bytes through unchanged in both directions, the added latency on every
round trip (also of a connection opened before it), the reset of a command that ran, a refused
target, and no CPU spent on idle connections."""

from __future__ import annotations

import socket
import time

import pytest
import redis

from chaos.netproxy import TcpProxy
from chaos.topology import RedisServer


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    server = RedisServer(tmp_path_factory.mktemp("netproxy"), persistent=False)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def proxy(server):
    proxy = TcpProxy(server.port).start()
    yield proxy
    proxy.close()


def test_proxy__large_values_pass_unchanged_both_ways(proxy):
    client = redis.Redis(port=proxy.port)
    value = bytes(range(256)) * 20_000  # 5 MB: many chunks, the sink's buffer full on the way
    client.set("big", value)
    assert client.get("big") == value


def test_proxy__latency_delays_each_round_trip_of_an_open_connection(proxy):
    client = redis.Redis(port=proxy.port)
    client.ping()  # the connection exists before the latency does
    proxy.set_latency(0.1)
    started = time.monotonic()
    client.ping()
    slow = time.monotonic() - started
    proxy.set_latency(0.0)
    started = time.monotonic()
    client.ping()
    fast = time.monotonic() - started
    assert 0.19 <= slow < 0.6, slow
    assert fast < 0.05, fast


def test_proxy__reset_next_runs_the_command_and_resets_the_client(proxy, server):
    with socket.create_connection(("127.0.0.1", proxy.port), timeout=5) as sock:
        sock.sendall(b"PING\r\n")
        assert sock.recv(64) == b"+PONG\r\n"
        proxy.reset_next(1)
        sock.sendall(b"SET reset-me 1\r\n")
        with pytest.raises(ConnectionResetError):
            sock.recv(64)
    assert proxy.reset_count == 1
    assert redis.Redis(port=server.port).get("reset-me") == b"1"


def test_proxy__refused_target_resets_the_client():
    with socket.socket() as spare:
        spare.bind(("127.0.0.1", 0))
        dead = spare.getsockname()[1]  # bound, never listening: connections are refused
        proxy = TcpProxy(dead).start()
        try:
            # The reset may come before connect() returned, or on the first read.
            with pytest.raises(ConnectionResetError), socket.create_connection(("127.0.0.1", proxy.port), 5) as sock:
                sock.recv(64)
        finally:
            proxy.close()


def test_proxy__idle_connections_cost_no_cpu(proxy):
    clients = [redis.Redis(port=proxy.port) for _ in range(200)]
    for client in clients:
        client.ping()
    before = time.process_time()
    time.sleep(2)
    # A pump thread per direction woke twice a second each: 400 threads, ~0.08 s of CPU here.
    assert time.process_time() - before < 0.02

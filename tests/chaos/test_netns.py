"""chaos/netns.py: namespaces behind a bridge, a DROP rule that silences one path of one namespace
(packets dropped, not refused), healing, and nothing left behind, the host's own rules untouched,
also after a harness that was SIGKILLed."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from chaos import netns

pytestmark = pytest.mark.slow

PROBE = """
import socket, sys, time
started = time.monotonic()
try:
    with socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2) as sock:
        sock.sendall(b"PING\\r\\n")
        print(sock.recv(16).decode().strip(), end="")
except OSError as exc:
    print(type(exc).__name__, end="")
print(f" {time.monotonic() - started:.1f}")
"""


def _probe(namespace: netns.Namespace, port: int, host: str | None = None) -> tuple[str, float]:
    argv = namespace.wrap([sys.executable, "-c", PROBE, host or namespace.network.host, str(port)])
    answer, took = subprocess.run(argv, capture_output=True, text=True, timeout=20, check=True).stdout.rsplit(" ", 1)
    return answer, float(took)


def _host_state() -> str:
    rules = [subprocess.run(["iptables", "-w", *table, "-S"], capture_output=True, text=True).stdout
             for table in ([], ["-t", "nat"])]  # fmt: skip
    return "".join(rules) + netns.ip("-o", "addr", "show", "lo").stdout


def _leftovers(owner: int) -> str:
    names = netns.ip("netns", "list").stdout + netns.ip("-o", "link").stdout
    return "\n".join(
        line for line in names.splitlines() if f"{netns.PREFIX}-{owner}-" in line or f"{netns.PREFIX}{owner}" in line
    )


@pytest.fixture(autouse=True)
def _can_run():
    missing = netns.available()
    if missing:
        pytest.fail(f"network namespaces unavailable: {missing} (scripts/install-system-packages.sh)")


def test_network__a_dropped_path_is_silent_only_there_and_everything_is_removed(tmp_path: Path):
    from django.conf import settings

    redis_port = int(settings.CACHES["default"]["LOCATION"].rsplit(":", 1)[1].split("/")[0])
    before = _host_state()
    network = netns.Network(2, {"redis": redis_port}, tmp_path).create()
    try:
        first, second = network.namespaces
        assert _probe(first, first.ports["redis"])[0] == "+PONG"

        first.drop_dependency("redis")
        answer, took = _probe(first, first.ports["redis"])
        # Dropped, not refused: the connect waits out its whole timeout.
        assert answer == "TimeoutError"
        assert took >= 1.9
        assert _probe(second, second.ports["redis"])[0] == "+PONG"
        assert _host_state() == before

        first.heal()
        assert _probe(first, first.ports["redis"])[0] == "+PONG"
    finally:
        network.remove()
    assert _leftovers(os.getpid()) == ""
    assert _host_state() == before


def _pong_server() -> socket.socket:
    """A listener on a free port of the host's loopback answering +PONG, as a second server of the
    dependency (a Sentinel beside the primary)."""
    listener = socket.create_server(("127.0.0.1", 0))

    def serve() -> None:
        with contextlib.suppress(OSError):
            while True:
                client, _ = listener.accept()
                with client:
                    client.recv(16)
                    client.sendall(b"+PONG\r\n")

    threading.Thread(target=serve, daemon=True).start()
    return listener


def test_network__a_dependency_s_servers_are_reached_on_loopback_and_partitioned_together(tmp_path: Path):
    from django.conf import settings

    redis_port = int(settings.CACHES["default"]["LOCATION"].rsplit(":", 1)[1].split("/")[0])
    sentinel = _pong_server()
    sentinel_port = sentinel.getsockname()[1]
    before = _host_state()
    network = netns.Network(2, {"redis": redis_port, "redis_sentinel_0": sentinel_port}, tmp_path).create()
    try:
        first, second = network.namespaces
        # An address announced at run time (127.0.0.1:<port>, as a Sentinel names the primary)
        # reaches the server from inside the namespace, through the namespace's route.
        assert _probe(first, sentinel_port, "127.0.0.1")[0] == "+PONG"
        assert _probe(first, redis_port, "127.0.0.1")[0] == "+PONG"
        assert first.rewrite(f"127.0.0.1:{redis_port},127.0.0.1:{sentinel_port}") == (
            f"{network.host}:{first.ports['redis']},{network.host}:{first.ports['redis_sentinel_0']}"
        )

        first.drop_dependency("redis")
        # Every server of the dependency, by its route and by its loopback address: dropped.
        for port, host in (
            (redis_port, "127.0.0.1"),
            (sentinel_port, "127.0.0.1"),
            (first.ports["redis_sentinel_0"], None),
        ):
            answer, took = _probe(first, port, host)
            assert (answer, took >= 1.9) == ("TimeoutError", True), (port, host)
        assert _probe(second, sentinel_port, "127.0.0.1")[0] == "+PONG"
        assert _host_state() == before

        first.heal()
        assert _probe(first, sentinel_port, "127.0.0.1")[0] == "+PONG"
    finally:
        network.remove()
        sentinel.close()
    assert _leftovers(os.getpid()) == ""
    assert _host_state() == before


def test_remove_stale__what_a_killed_harness_left_is_removed(tmp_path: Path):
    script = (
        "import sys, time\nfrom pathlib import Path\nfrom chaos import netns\n"
        "netns.Network(1, {}, Path(sys.argv[1])).create()\nprint('up', flush=True)\ntime.sleep(60)\n"
    )
    root = Path(__file__).resolve().parents[2]
    child = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=root, stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout is not None
        assert child.stdout.readline().strip() == "up"
        assert _leftovers(child.pid) != ""
    finally:
        child.send_signal(signal.SIGKILL)  # no atexit, no finally: its namespace stays
        child.wait(timeout=10)
        assert child.stdout is not None
        child.stdout.close()
    time.sleep(0.2)
    removed = netns.remove_stale()
    assert any(name.startswith(f"{netns.PREFIX}-{child.pid}-") for name in removed), removed
    assert _leftovers(child.pid) == ""

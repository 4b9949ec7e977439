"""Network namespaces for the chaos harness: every web instance and worker behind a network of its
own, so that a fault (packets dropped, latency) hits one instance's network only.

Layout, all created by the harness and removed by it:

    host:  bridge omkc<pid> with 10.213.N.1/24  <-- HAProxy's checks and requests, the proxies
             |-- veth omkc<pid>h<i>  ==  namespace omkc-<pid>-<i>: veth 10.213.N.(10+i), lo
             |-- ...

The harness's own servers stay on the host, on 127.0.0.1. An instance reaches each of them through
a user-space TCP proxy (chaos/netproxy.py, one process for the run) listening on the bridge
address with a port per namespace and dependency: that proxy is where latency is added (this
kernel has no netem qdisc), and its ports are what a partition drops.

A dependency may be several servers (a Redis primary, its replica and three Sentinels; a
PostgreSQL primary and its standby): each is a target of its own, named `<dependency>` or
`<dependency>_<member>` ("redis_b", "redis_sentinel_0"), and a partition of the dependency drops
the paths to all of them. The instance's environment is rewritten to the routes (`rewrite`), and
an address it learns at run time (the Sentinels announce the primary as 127.0.0.1:<port>) is
sent to the same route by an iptables DNAT rule in the namespace's nat OUTPUT chain, one per
target: 127.0.0.1:<target port> -> <bridge>:<route>. Such a packet keeps its loopback source, so
the namespace (only it) has route_localnet on, and a MASQUERADE on its veth gives the packet the
namespace's address, to which the proxy's replies come back.

Faults live in one iptables chain, OMKFAULT, inside the namespace (jumped to from INPUT and
OUTPUT, after the DNAT: its rules see the route's port): a DROP rule there drops the packets
silently, the way a broken path does (no RST, no ICMP), and flushing the chain heals it. Nothing
here touches the host's own rules or its loopback.
"""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import os
import re
import signal
import subprocess
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path

from chaos.topology import pid_alive

PREFIX = "omkc"
CHAIN = "OMKFAULT"
LOCK = Path("/tmp/omk-chaos-netns.lock")
SUBNETS = range(1, 250)  # 10.213.<n>.0/24


def ip(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check, timeout=30)


def available() -> str | None:
    """None when namespaces can be used here, else why not."""
    if os.geteuid() != 0:
        return "not root"
    for tool in ("ip", "iptables"):
        if not any(Path(d, tool).exists() for d in [*os.environ.get("PATH", "").split(":"), "/usr/sbin", "/sbin"]):
            return f"{tool} not installed (scripts/install-system-packages.sh)"
    return None


@dataclass
class Namespace:
    name: str
    index: int
    address: str
    network: Network
    device: str = ""  # the veth end inside the namespace
    ports: dict[str, int] = field(default_factory=dict)  # dependency -> its proxy port on the bridge
    faults: set[str] = field(default_factory=set)

    def wrap(self, argv: list[str]) -> list[str]:
        """The command run inside the namespace (`ip netns exec` execs it: the pid is the command's)."""
        return ["ip", "netns", "exec", self.name, *argv]

    def rewrite(self, value: str) -> str:
        """A URL with each dependency's 127.0.0.1:<port> replaced by this namespace's proxy for it."""
        for dependency, port in self.network.targets.items():
            proxy = self.ports[dependency]
            value = re.sub(rf"(127\.0\.0\.1|localhost):{port}\b", f"{self.network.host}:{proxy}", value)
        return value

    def _iptables(self, *args: str) -> None:
        subprocess.run(
            ["ip", "netns", "exec", self.name, "iptables", "-w", *args],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )

    def members(self, dependency: str) -> list[str]:
        """The targets of a dependency: `dependency` itself and every `dependency_<member>`."""
        return [name for name in self.ports if name == dependency or name.startswith(f"{dependency}_")]

    def drop_dependency(self, dependency: str) -> None:
        """Partition from one dependency: every packet to or from the proxy port of each of its
        servers is dropped (for Redis: the primary, the replica and the Sentinels)."""
        members = self.members(dependency)
        if not members:
            raise KeyError(f"no target named {dependency!r} or {dependency}_*: {sorted(self.ports)}")
        host = self.network.host
        for member in members:
            port = str(self.ports[member])
            self._iptables("-A", CHAIN, "-p", "tcp", "-d", host, "--dport", port, "-j", "DROP")
            self._iptables("-A", CHAIN, "-p", "tcp", "-s", host, "--sport", port, "-j", "DROP")
        self.faults.add(dependency)

    def redirect_loopback(self) -> None:
        """127.0.0.1:<target port> inside the namespace reaches the target's route (see the module's
        docstring): for the addresses an instance learns at run time, not from its environment."""
        for name, port in self.network.targets.items():
            self._iptables(
                "-t",
                "nat",
                "-A",
                "OUTPUT",
                "-p",
                "tcp",
                "-d",
                "127.0.0.1",
                "--dport",
                str(port),
                "-j",
                "DNAT",
                "--to-destination",
                f"{self.network.host}:{self.ports[name]}",
            )
        self._iptables("-t", "nat", "-A", "POSTROUTING", "-o", self.device, "-s", "127.0.0.1", "-j", "MASQUERADE")
        subprocess.run(
            ["ip", "netns", "exec", self.name, "sysctl", "-q", "-w", "net.ipv4.conf.all.route_localnet=1"],
            capture_output=True,
            text=True,
            check=True,
            timeout=30,
        )

    def drop_inbound(self, port: int) -> None:
        """Partition from the load balancer: its requests and health checks to `port` vanish."""
        self._iptables("-A", CHAIN, "-p", "tcp", "--dport", str(port), "-j", "DROP")
        self._iptables("-A", CHAIN, "-p", "tcp", "--sport", str(port), "-j", "DROP")
        self.faults.add("inbound")

    def heal(self) -> None:
        self._iptables("-F", CHAIN)
        self.faults.clear()

    def set_latency(self, seconds: float, jitter: float = 0.0) -> None:
        """Delay each chunk by seconds +- jitter, each way, on every dependency path of this namespace."""
        self.network.proxy_command(f"latency {self.index} {seconds} {jitter}")

    def pids(self) -> list[int]:
        out = ip("netns", "pids", self.name, check=False).stdout
        return [int(p) for p in out.split()]


class Network:
    """The bridge, the namespaces and the dependency proxy of one harness process."""

    def __init__(self, count: int, targets: dict[str, int], directory: Path):
        self.owner = os.getpid()
        self.count = count
        self.targets = dict(targets)  # dependency name -> its port on 127.0.0.1
        self.dir = directory
        self.bridge = f"{PREFIX}{self.owner}"
        self.subnet = 0
        self.host = ""
        self.namespaces: list[Namespace] = []
        self.proxy: subprocess.Popen | None = None
        self._proxy_lock = threading.Lock()
        self._removed = False

    # -- life ---------------------------------------------------------------------------------
    def create(self) -> Network:
        remove_stale()
        atexit.register(self.remove)
        try:
            self._create()
        except BaseException:
            self.remove()
            raise
        return self

    def _create(self) -> None:
        LOCK.touch(exist_ok=True)
        with LOCK.open() as lock:
            # Concurrent runs (two checkouts' CI) each take a subnet nobody uses yet.
            fcntl.flock(lock, fcntl.LOCK_EX)
            used = set(re.findall(r"inet 10\.213\.(\d+)\.", ip("-o", "addr").stdout))
            self.subnet = next(n for n in SUBNETS if str(n) not in used)
            self.host = f"10.213.{self.subnet}.1"
            ip("link", "add", self.bridge, "type", "bridge")
            ip("addr", "add", f"{self.host}/24", "dev", self.bridge)
            ip("link", "set", self.bridge, "up")
        for index in range(self.count):
            self.namespaces.append(
                Namespace(name=f"{PREFIX}-{self.owner}-{index}", index=index, address="", network=self)
            )
            self._namespace(self.namespaces[-1])
        self._start_proxy()

    def _namespace(self, namespace: Namespace) -> None:
        name, index = namespace.name, namespace.index
        outside, inside = f"{PREFIX}{self.owner}h{index}", f"{PREFIX}{self.owner}n{index}"
        address = namespace.address = f"10.213.{self.subnet}.{10 + index}"
        namespace.device = inside
        ip("netns", "add", name)
        ip("link", "add", outside, "type", "veth", "peer", "name", inside)
        ip("link", "set", inside, "netns", name)
        ip("link", "set", outside, "master", self.bridge)
        ip("link", "set", outside, "up")
        ip("-n", name, "addr", "add", f"{address}/24", "dev", inside)
        ip("-n", name, "link", "set", inside, "up")
        ip("-n", name, "link", "set", "lo", "up")
        namespace._iptables("-N", CHAIN)
        namespace._iptables("-A", "INPUT", "-j", CHAIN)
        namespace._iptables("-A", "OUTPUT", "-j", CHAIN)

    def _start_proxy(self) -> None:
        """One proxy process for every route: namespace i's dependency d on a port of its own."""
        import json
        import select

        routes = [
            f"{namespace.index}:{dependency}:{self.host}=127.0.0.1:{port}"
            for namespace in self.namespaces
            for dependency, port in self.targets.items()
        ]
        self.dir.mkdir(parents=True, exist_ok=True)
        log = self.dir / "netproxy.log"
        with log.open("ab") as stderr:
            self.proxy = subprocess.Popen(
                [sys.executable, "-m", "chaos.netproxy", *routes],
                stdin=subprocess.PIPE,
                stdout=subprocess.PIPE,
                stderr=stderr,
                text=True,
                start_new_session=True,
            )
        assert self.proxy.stdout is not None
        # A Python start-up on a busy machine: up to a minute.
        if not select.select([self.proxy.stdout], [], [], 60)[0]:
            raise RuntimeError(f"the dependency proxy did not start within 60 s; see {log}")
        line = self.proxy.stdout.readline()
        if not line:
            raise RuntimeError(f"the dependency proxy exited at start; see {log}")
        ports = json.loads(line)
        for namespace in self.namespaces:
            namespace.ports = dict(ports.get(str(namespace.index), {}))
            namespace.redirect_loopback()

    def proxy_command(self, line: str) -> None:
        assert self.proxy is not None
        assert self.proxy.stdin is not None
        with self._proxy_lock:
            self.proxy.stdin.write(line + "\n")
            self.proxy.stdin.flush()

    def remove(self) -> None:
        """Everything created, gone: processes left in the namespaces, the namespaces (their veth
        pairs with them), the bridge, the proxy. Safe to call twice."""
        if self._removed:
            return
        self._removed = True
        for namespace in self.namespaces:
            _remove_namespace(namespace.name)
            # The kernel frees a namespace (and the veth end in it) asynchronously: deleting the
            # host end removes the pair now, so the next network may reuse the names at once.
            ip("link", "del", f"{PREFIX}{self.owner}h{namespace.index}", check=False)
        ip("link", "del", self.bridge, check=False)
        if self.proxy is not None:
            for pipe in (self.proxy.stdin, self.proxy.stdout):
                with contextlib.suppress(OSError, AttributeError):
                    pipe.close()  # type: ignore[union-attr]  # both opened with PIPE above
            with contextlib.suppress(Exception):
                self.proxy.wait(timeout=3)
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proxy.pid, signal.SIGKILL)


def _remove_namespace(name: str) -> None:
    for pid in ip("netns", "pids", name, check=False).stdout.split():
        with contextlib.suppress(ProcessLookupError, ValueError):
            os.kill(int(pid), signal.SIGKILL)
    ip("netns", "del", name, check=False)


def remove_stale() -> list[str]:
    """What a killed run left (its namespaces, their processes, its bridge): removed when its
    harness process is gone. Returns the names removed."""
    removed = []
    for line in ip("netns", "list", check=False).stdout.splitlines():
        name = line.split()[0] if line.split() else ""
        match = re.fullmatch(rf"{PREFIX}-(\d+)-\d+", name)
        if match and not pid_alive(int(match.group(1))):
            _remove_namespace(name)
            removed.append(name)
    for match in re.finditer(rf"^\d+: ({PREFIX}(\d+)(?:h\d+)?)[@:]", ip("-o", "link").stdout, re.MULTILINE):
        if not pid_alive(int(match.group(2))):
            ip("link", "del", match.group(1), check=False)
            removed.append(match.group(1))
    return removed

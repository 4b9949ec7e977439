"""Network faults of a chaos run, each on one instance's own network namespace (chaos/netns.py):

- partition_postgres / partition_redis: every packet between the instance and every server of
  that dependency dropped (both PostgreSQL nodes; the Redis primary, its replica and the three
  Sentinels), by iptables DROP rules inside its namespace (no RST, no ICMP), healed after a while;
- partition_lb: the load balancer's requests and health checks to the instance dropped;
- latency: 200 +- 50 ms added to each round trip on the instance's paths to PostgreSQL and Redis
  (the dependency proxy delays each chunk by half of it each way: this kernel has no netem).

Expected, and checked here: a partitioned instance turns unready and leaves HAProxy's rotation,
and returns once healed; an instance SIGTERMed while partitioned exits within its budget, its
report naming the steps that were cut; no request waits past HAProxy's `timeout server`, the
longest any request may take. The checker attributes failed requests on the instance during the
fault (and a few seconds after) to the fault's kind; nothing acknowledged may be lost.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import random
import threading
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import TYPE_CHECKING, Any

from chaos import netns
from chaos.checker import response_of
from chaos.recorder import ACKED
from chaos.topology import PostgresPair, wait_until

if TYPE_CHECKING:
    from chaos.netns import Network
    from chaos.run import Run
    from chaos.scaler import Platform
    from chaos.topology import WebInstance

PARTITIONS = ("partition_postgres", "partition_redis", "partition_lb")
KINDS = (*PARTITIONS, "latency")
# HAProxy's `timeout server` (chaos/topology.py): no request may take longer behind it.
REQUEST_BOUND = 15.0


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--no-netns", action="store_true", help="instances on the host's loopback: no namespaces, no network faults"
    )
    parser.add_argument("--no-partition", action="store_true", help="turn off the partition faults")
    parser.add_argument("--no-latency", action="store_true", help="turn off the latency fault")
    parser.add_argument("--partition-seconds", type=float, default=6.0, help="how long a partition lasts")
    parser.add_argument("--latency-seconds", type=float, default=8.0, help="how long added latency lasts")
    parser.add_argument("--latency-ms", type=float, default=200.0, help="added round-trip latency")
    parser.add_argument("--latency-jitter-ms", type=float, default=50.0, help="+- on the added latency")
    parser.add_argument(
        "--overlap-faults",
        action="store_true",
        help="let network faults overlap failovers and restarts (a run too short to keep them apart: CI's 35 s)",
    )


def create_network(run: Run) -> Network | None:
    """The namespaces of a run: one per HAProxy slot, one per background process."""
    if run.args.no_netns:
        return None
    missing = netns.available()
    if missing:
        raise RuntimeError(f"network namespaces unavailable ({missing}); run with --no-netns to go without")
    assert run.postgres is not None
    assert run.redis is not None
    count = run.args.max_instances * 2 + 4 + run.args.workers + run.args.exporters
    # Every server of a dependency is a target of its own (a partition drops them all): both
    # PostgreSQL nodes of the pair (DATABASE_URL lists them), and the Redis primary, its replica
    # and the three Sentinels (the Sentinels announce either server as 127.0.0.1:<port>).
    nodes = run.postgres.nodes if isinstance(run.postgres, PostgresPair) else [run.postgres]
    targets = {("postgres" if i == 0 else f"postgres_{i}"): node.port for i, node in enumerate(nodes)}
    targets |= {"redis": run.redis.primary.port, "redis_replica": run.redis.replica.port}
    targets |= {f"redis_sentinel_{i}": sentinel.port for i, sentinel in enumerate(run.redis.sentinels)}
    if run.bigquery:
        # The exporters' sink, reached through the proxy too (never partitioned: it stands for
        # BigQuery's API, not for a dependency of the instances' requests).
        targets |= {"bigquery": run.bigquery.rest_port, "bigquery_grpc": run.bigquery.grpc_port}
    return netns.Network(count, targets, run.report_dir / "network").create()


@dataclass
class Window:
    kind: str
    instance: str
    slot: int
    start: float
    healed: float | None = None
    left_lb_s: float | None = None  # after the start: HAProxy no longer sends to it
    back_in_lb_s: float | None = None  # after the heal: HAProxy sends to it again
    sigterm: dict[str, Any] | None = None  # the instance was SIGTERMed while partitioned
    detail: dict[str, Any] = field(default_factory=dict)


class NetworkFaults:
    def __init__(self, run: Run, platform: Platform, network: Network):
        self.run = run
        self.args = run.args
        self.platform = platform
        self.network = network
        self.recorder = run.recorder
        self.rng = random.Random(run.args.seed * 104729 + 3)
        self.windows: list[Window] = []
        self.errors: list[str] = []
        self.stop_event = threading.Event()
        self.thread: threading.Thread | None = None
        self.plan: list[tuple[float, str]] = []
        self.load_end = float("inf")
        self.skipped: list[str] = []  # held back by dependency faults until too late to run whole

    # -- schedule -----------------------------------------------------------------------------
    def build_plan(self, t0: float) -> list[tuple[float, str]]:
        """Faults one after the other (never two at once), spread over the run from the seed.

        A partition every ~20 s (at least one), latency every ~60 s (at least one); the first
        partition of the run is the one that is SIGTERMed while partitioned when the run is long
        enough to afford a shutdown budget inside it.
        """
        duration = self.args.duration
        kinds: list[str] = []
        if not self.args.no_partition:
            partitions = list(PARTITIONS)
            self.rng.shuffle(partitions)
            kinds += [partitions[i % len(partitions)] for i in range(max(1, round(duration / 20)))]
        if not self.args.no_latency:
            kinds += ["latency"] * max(1, round(duration / 60))
        self.rng.shuffle(kinds)
        lo, hi = min(6.0, duration * 0.15), max(duration - 10.0, duration * 0.7)
        slot = (hi - lo) / max(1, len(kinds))
        self.plan = [(t0 + lo + i * slot + self.rng.uniform(0, slot * 0.3), kind) for i, kind in enumerate(kinds)]
        return self.plan

    def start(self, t0: float) -> None:
        self.load_end = t0 + self.args.duration
        self.build_plan(t0)
        self.thread = threading.Thread(target=self._loop, name="network-faults", daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.stop_event.set()
        if self.thread is not None:
            self.thread.join(timeout=90)
        for namespace in self.network.namespaces:
            with contextlib.suppress(Exception):
                namespace.heal()
                namespace.set_latency(0.0)

    def _loop(self) -> None:
        gate = self.platform.gate
        for when, kind in self.plan:
            while not self.stop_event.is_set() and self.recorder.now() < when:
                time.sleep(0.05)
            if self.stop_event.is_set():
                return
            waited = gate.enter("network", self.stop_event)
            if waited is None:
                return
            # One held back by dependency faults until it could no longer run whole before the
            # load ends (a partition cut short may not have had its victim out yet): not begun.
            length = self.args.latency_seconds if kind == "latency" else self.args.partition_seconds
            if self.recorder.now() + length + gate.GAP > self.load_end:
                gate.leave("network", ran=False)
                self.skipped.append(kind)
                self.run.log(f"{kind} not begun: held back by a dependency fault until too late in the load")
                continue
            try:
                self._fault(kind, deferred=waited)
            except Exception as exc:
                self.errors.append(f"network fault {kind} failed: {exc!r}")
            finally:
                gate.leave("network")

    # -- one fault ----------------------------------------------------------------------------
    def _fault(self, kind: str, deferred: float = 0.0) -> None:
        victim = self.platform._pick_victim()
        if victim is None or victim.namespace is None:
            return
        namespace = victim.namespace
        record = self.platform.records[victim.name]
        window = Window(kind=kind, instance=victim.name, slot=victim.slot, start=self.recorder.now())
        if deferred:
            window.detail["deferred_for_dependency_fault_s"] = deferred
        self.windows.append(window)
        sigterm = kind in ("partition_postgres", "partition_redis") and self._sigterm_wanted()
        try:
            if kind == "latency":
                half, jitter = self.args.latency_ms / 2000, self.args.latency_jitter_ms / 2000
                namespace.set_latency(half, jitter)
                self.recorder.event("latency", victim.name, ms=self.args.latency_ms, jitter=self.args.latency_jitter_ms)
                self.stop_event.wait(self.args.latency_seconds)
                namespace.set_latency(0.0)
                window.healed = self.recorder.now()
                self.recorder.event("latency_end", victim.name)
            else:
                self._partition(kind, victim, window, sigterm)
        finally:
            if kind != "latency":
                namespace.heal()
                window.healed = self.recorder.now()
                self.recorder.event("heal", victim.name, path=kind.removeprefix("partition_"))
        healed = window.healed
        assert healed is not None  # set on both paths above
        # Until it is back, or no longer the platform's (drained or killed meanwhile): waiting out
        # the 30 s for an instance scaled in would hold the next faults past a short run's end.
        # A latency victim stays in the rotation (its checks answer within `timeout check`), so
        # this returns at once; its window, like a partition's, explains the failures on it.
        if (
            victim.alive()
            and window.sigterm is None
            and wait_until(lambda: self._up(victim) or not self._serving(victim), timeout=30, interval=0.1)
            and self._up(victim)
        ):
            window.back_in_lb_s = round(self.recorder.now() - healed, 2)
        end = healed + (window.back_in_lb_s or 0.0)
        record.network_faults.append((kind, window.start, end))

    def _partition(self, kind: str, victim: WebInstance, window: Window, sigterm: bool) -> None:
        namespace = victim.namespace
        assert namespace is not None
        if kind == "partition_lb":
            namespace.drop_inbound(victim.port)
        else:
            namespace.drop_dependency(kind.removeprefix("partition_"))
        self.recorder.event("partition", victim.name, path=kind.removeprefix("partition_"))
        until = window.start + self.args.partition_seconds
        while self.recorder.now() < until and not self.stop_event.is_set():
            if window.left_lb_s is None and not self._up(victim):
                window.left_lb_s = round(self.recorder.now() - window.start, 2)
                if sigterm:
                    window.sigterm = self._sigterm(victim)
                    break
            time.sleep(0.1)
        if window.left_lb_s is None and not self._up(victim):
            window.left_lb_s = round(self.recorder.now() - window.start, 2)

    def _serving(self, instance: WebInstance) -> bool:
        with self.platform.lock:
            return instance.name in self.platform.instances and instance.alive()

    def _up(self, instance: WebInstance) -> bool:
        return self.platform.haproxy.server_status().get(instance.slot, "").startswith("UP")

    def _sigterm_wanted(self) -> bool:
        """Once per run, when the run can afford the instance's whole shutdown inside it."""
        if any(w.sigterm for w in self.windows) or self.args.duration < 60:
            return False
        return self.recorder.now() + self.args.budget < self.plan[-1][0] + self.args.duration * 0.2

    def _sigterm(self, victim: WebInstance) -> dict[str, Any]:
        """Scale the partitioned instance in (the platform's drain, SIGTERM, SIGKILL at the
        budget) and wait for its exit, still partitioned."""
        record = self.platform.records[victim.name]
        self.platform.scale_in(victim)
        wait_until(lambda: record.exited is not None, timeout=self.args.budget + 15, interval=0.2)
        outcome: dict[str, Any] = {
            "exit_s": round(record.exited - record.sigterm, 2) if record.exited and record.sigterm else None,
            "forced_kill_at_budget": record.forced_kill_at_budget,
            "budget_s": self.args.budget,
        }
        report = victim.run_dir / f"gunicorn-{victim.pid}.report.json"
        with contextlib.suppress(OSError, ValueError):
            data = json.loads(report.read_text())
            outcome["report_ok"] = data.get("ok")
            outcome["report_stored"] = data.get("stored")
            outcome["steps_cut"] = {
                s["name"]: f"{s['status']}: {s['detail']}"[:160]
                for s in data.get("steps", [])
                if s["status"] not in ("ok", "skipped")
            }
        return outcome

    # -- the report ---------------------------------------------------------------------------
    def summary(self, verdict: dict[str, Any]) -> dict[str, Any]:
        """Per fault kind: requests failed (by their status or error), the longest request the
        victim served during its fault, when the victim left and rejoined the rotation, and how
        long until writes succeeded again. Adds its violations to the verdict's."""
        ops, _ = self.recorder.snapshot()
        attempts = [(op, a) for op in ops for a in op.attempts if a.t1 is not None]
        out: dict[str, Any] = {}
        for kind in KINDS:
            windows = [w for w in self.windows if w.kind == kind]
            if not windows:
                continue
            failed = Counter(
                str(a.status or a.error or "no answer") for _, a in attempts if a.failed and a.cause == kind
            )
            # Requests the victim served (HAProxy's log names the slot) while its fault lasted.
            during = [
                a
                for _, a in attempts
                for w in windows
                if a.server == f"s{w.slot}" and a.t0 <= (w.healed or a.t0) and a.t1 >= w.start
            ]
            slot_writes = []
            for w in windows:
                after = [
                    a.t1 for op, a in attempts if op.write and not a.failed and op.outcome == ACKED and a.t0 >= w.start
                ]
                slot_writes.append(round(min(after) - w.start, 2) if after else None)
            # A row of the per-fault table too (report.fault_table), by how the requests failed.
            by_response = Counter(response_of(a) for _, a in attempts if a.failed and a.cause == kind)
            verdict.setdefault("faults", {})[kind] = {
                "count": len(windows),
                "failed_requests": sum(by_response.values()),
                "by_response": dict(by_response),
            }
            out[kind] = {
                "faults": len(windows),
                "requests_failed": sum(failed.values()),
                "requests_failed_by_cause": dict(failed),
                "longest_request_s": round(max((a.t1 - a.t0 for a in during), default=0.0), 2),
                "seconds_until_writes_succeed": slot_writes,
                "windows": [asdict(w) for w in windows],
            }
            for w in windows:
                if kind != "latency" and w.left_lb_s is None and w.sigterm is None:
                    verdict["violations"].append(f"{kind} on {w.instance}: it never left the load balancer")
                if kind != "latency" and w.sigterm is None and w.back_in_lb_s is None:
                    alive = self.platform.records[w.instance].exited is None
                    if alive:
                        verdict["violations"].append(
                            f"{kind} on {w.instance}: not back in the load balancer after the heal"
                        )
                if w.sigterm and (w.sigterm.get("forced_kill_at_budget") or w.sigterm.get("exit_s") is None):
                    verdict["violations"].append(
                        f"{kind} on {w.instance}: SIGTERMed while partitioned, not out in its budget"
                    )
        longest = max((a.t1 - a.t0 for _, a in attempts), default=0.0)
        out["longest_request_s"] = round(longest, 2)
        out["skipped_near_the_end"] = self.skipped
        out["request_bound_s"] = REQUEST_BOUND
        if longest > REQUEST_BOUND + 1.0:
            verdict["violations"].append(f"a request took {longest:.1f} s, past the {REQUEST_BOUND:.0f} s bound")
        for error in self.errors:
            verdict["violations"].append(f"harness: {error}")
        return out

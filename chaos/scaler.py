"""The platform: an autoscaler that follows a load schedule, and faults on a seeded schedule.

Scale-up: start an instance, wait for its own `/ready` (start-up recovery runs before it), then
put it behind HAProxy. Scale-in, the Kubernetes way: the pod is marked draining (preStop:
readiness 503), the load balancer stops sending (HAProxy's health check sees it), then SIGTERM,
then SIGKILL when the grace budget runs out. Faults do not warn anyone.
"""

from __future__ import annotations

import contextlib
import json
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from chaos.recorder import Recorder
from chaos.topology import (
    HAProxy,
    PostgresCluster,
    PostgresPair,
    RedisGroup,
    RedisServer,
    WebInstance,
    WorkerProcess,
    wait_until,
)

if TYPE_CHECKING:
    from chaos.netns import Network


@dataclass
class InstanceRecord:
    """One instance's life, for the checker (which requests could legitimately fail on it)."""

    name: str
    slot: int
    port: int
    pid: int = 0
    started: float = 0.0
    ready: float | None = None
    drain_start: float | None = None
    sigterm: float | None = None
    exited: float | None = None
    killed: float | None = None
    paused: list[tuple[float, float]] = field(default_factory=list)
    # (fault kind, start, heal + time back into the load balancer's rotation): chaos/netfaults.py
    network_faults: list[tuple[str, float, float]] = field(default_factory=list)
    exit_code: int | None = None
    forced_kill_at_budget: bool = False


# Faults of a dependency (every instance sees them) whose windows must not overlap a network
# fault's (see FaultGate).
DEPENDENCY_FAULTS = ("redis_failover", "postgres_failover", "redis_restart", "postgres_restart")


class FaultGate:
    """Dependency faults (failovers, restarts) and network faults (chaos/netfaults.py) one at a
    time, each clear of the other's window by the checker's SETTLE: a failed request is then
    attributed to the one fault that can explain it, and each kind's recovery figures in the
    report are its own (a partition of the instance that served a write would otherwise take the
    failover's failures, and a latency window would lengthen its "writes ok again").

    A dependency fault due during a network fault waits for it to end (its victim back in the
    rotation) and the gap; a network fault waits for a dependency fault in progress, or one
    waiting, and the gap. The network faults keep their planned, even spacing otherwise (moving
    each out of the way of a dependency fault due within its span bunched them up: a 10-minute
    run had four back to back after a failover), and a dependency fault moves by about a
    network fault's length and the gap. `apart=False`: no waiting (overlapping faults on purpose).

    Two dependency faults are kept DEPENDENCY_GAP apart: a Redis restart begun 2 s after a
    failover's window, while the promoted primary's new replica was still syncing, turned into a
    second failover, and the first one's "writes ok again" took the second's 12 s.
    """

    GAP = 3.5  # seconds between one's window and the other's start: checker.SETTLE, and a margin
    # A failover's window ends at the promotion; the writes that wait for a replica come back
    # when the old primary has rejoined and synced: about 4 s more on a busy machine, and a margin.
    DEPENDENCY_GAP = 10.0

    def __init__(self, now: Callable[[], float], *, apart: bool = True):
        self.now = now
        self.apart = apart
        self._cond = threading.Condition()
        self._active: str | None = None
        self._waiting = 0  # dependency faults waiting for a network fault to end
        self._ended = {"dependency": -1e9, "network": -1e9}

    def enter(self, group: str, stop: threading.Event) -> float | None:
        """Wait until `group` ("dependency" or "network") may begin; the seconds waited, or None
        when `stop` was set meanwhile."""
        started = self.now()
        other = "network" if group == "dependency" else "dependency"
        with self._cond:
            if group == "dependency":
                self._waiting += 1
            try:
                while True:
                    if stop.is_set():
                        return None
                    now = self.now()
                    free = self._active is None and now >= self._ended[other] + self.GAP
                    if group == "network":
                        free = free and not self._waiting
                    else:
                        free = free and now >= self._ended["dependency"] + self.DEPENDENCY_GAP
                    if free or not self.apart:
                        self._active = group
                        return round(now - started, 2)
                    self._cond.wait(0.1)
            finally:
                if group == "dependency":
                    self._waiting -= 1

    def leave(self, group: str, *, ran: bool = True) -> None:
        """`ran=False`: the fault was not begun after all (no window for the other to keep clear of)."""
        with self._cond:
            self._active = None
            if ran:
                self._ended[group] = self.now()
            self._cond.notify_all()


@dataclass
class Schedule:
    """Desired instance counts over time and the fault times, all derived from the seed."""

    duration: float
    levels: list[tuple[float, int]]  # (from t, desired instances)
    web_kills: list[float]
    worker_kills: list[float]
    pauses: list[float]
    redis_restarts: list[float]
    postgres_restarts: list[float]
    postgres_failovers: list[float] = field(default_factory=list)
    # SIGKILL of the Redis primary, the replica promoted by the Sentinels (a Memorystore failover).
    redis_failovers: list[float] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        *,
        seed: int,
        duration: float,
        min_instances: int,
        max_instances: int,
        kill_every: float,
        faults: Mapping[str, bool],
    ) -> Schedule:
        rng = random.Random(seed)
        # Up, then down, then up...: every other step is a planned scale-in (a drain), so even a
        # short run has one, and a 10-minute run has a few dozen.
        levels, t, level, up = [], 0.0, min_instances, True
        while t < duration:
            levels.append((t, level))
            # The first step comes early, so the first scale-in falls inside even a 30 s run.
            t += rng.uniform(7, 12) if levels[1:] else rng.uniform(4, 6)
            if up and level < max_instances:
                level = rng.randint(level + 1, max_instances)
            elif level > min_instances:
                level = rng.randint(min_instances, level - 1)
            up = not up
        # Faults stay out of the first seconds (start-up) and the last ones (the checker's drain).
        lo, hi = min(6.0, duration * 0.15), max(duration - 6.0, duration * 0.85)

        def times(count: int) -> list[float]:
            return sorted(rng.uniform(lo, hi) for _ in range(count))

        web_kills = times(max(1, round(duration / kill_every))) if faults.get("kill", True) else []
        worker_kills = times(max(1, round(duration / 60))) if faults.get("kill_worker", True) else []
        pauses = times(max(1, round(duration / 120))) if faults.get("pause", True) else []
        redis = [duration * rng.uniform(0.3, 0.4)] if faults.get("redis_restart", True) else []
        postgres = [duration * rng.uniform(0.6, 0.7)] if faults.get("postgres_restart", True) else []
        # Drawn last, so the other faults keep the times a seed gave them before this one existed.
        # One per 5 minutes, each in the middle of its share of the run (a minute's run: one).
        pg_count = max(1, round(duration / 300))
        pg_failovers = [duration * (i + rng.uniform(0.45, 0.55)) / pg_count for i in range(pg_count)]
        # One every two minutes or so, evenly spread (a Sentinel will not fail the same primary over
        # twice in a row soon), each moved to the middle of the nearest step up: while the primary
        # is gone every instance is unready, and a scale-in due then would wait it out, so in a
        # short run the failover must not sit on the one planned scale-in.
        count = max(1, round(duration / 120))
        span = (hi - lo) / count
        targets = [lo + span * (i + 0.5 + rng.uniform(-0.1, 0.1)) for i in range(count)]
        ups = [
            (start + end) / 2
            for (start, level), (end, _) in zip(levels, [*levels[1:], (duration, 0)], strict=True)
            if level > min_instances and lo <= (start + end) / 2 <= hi
        ]

        def nearest_up(target: float) -> float:
            return min(ups, key=lambda t: abs(t - target)) if ups else target

        failovers = sorted({nearest_up(target) for target in targets}) if faults.get("redis_failover", True) else []
        return cls(
            duration,
            levels,
            web_kills,
            worker_kills,
            pauses,
            redis,
            postgres,
            postgres_failovers=pg_failovers if faults.get("postgres_failover", True) else [],
            redis_failovers=failovers,
        )

    def desired(self, t: float) -> int:
        current = self.levels[0][1]
        for start, level in self.levels:
            if start <= t:
                current = level
        return current

    def load(self, t: float, max_instances: int) -> float:
        """Relative client load (0..1] that goes with the desired capacity."""
        return max(0.25, self.desired(t) / max_instances)


class Platform:
    """Runs the instances and workers, scales them and injects the faults."""

    def __init__(
        self,
        *,
        recorder: Recorder,
        haproxy: HAProxy,
        redis: RedisServer | RedisGroup,
        postgres: PostgresCluster | PostgresPair | None,
        env: Mapping[str, str],
        directory: Path,
        schedule: Schedule,
        seed: int,
        budget: float,
        drain_delay: float,
        pause_seconds: float,
        background: dict[str, tuple[list[str], int]],
        drain_command: bool,
        unsafe_scale_in: bool = False,
        network: Network | None = None,
        faults_apart: bool = True,
        log: Callable[[str], None],
    ):
        self.recorder = recorder
        self.haproxy = haproxy
        self.redis = redis
        self.postgres = postgres
        self.env = dict(env)
        self.dir = directory
        self.schedule = schedule
        self.rng = random.Random(seed * 7919 + 1)
        self.budget = budget
        self.drain_delay = drain_delay
        self.pause_seconds = pause_seconds
        # Background processes by kind: (manage.py arguments, how many to keep running).
        self.background = background
        self.drain_command = drain_command
        self.unsafe_scale_in = unsafe_scale_in
        # Set by the proposals flow when staff start closing/executing (see _fault_pause).
        self.pause_trigger: threading.Event | None = None
        self.log = log
        # Network namespaces (chaos/netns.py): one per HAProxy slot, then one per background process.
        self.network = network
        self.lock = threading.RLock()
        self.instances: dict[str, WebInstance] = {}  # starting or serving (not draining, not dead)
        self.records: dict[str, InstanceRecord] = {}
        self.draining: dict[str, WebInstance] = {}
        self.workers: dict[str, WorkerProcess] = {}
        self.free_slots = list(range(len(haproxy.slot_ports)))
        self.dependency_windows: list[dict] = []  # redis/postgres restarts: [start, settled]
        self.stop_event = threading.Event()
        self.gate = FaultGate(recorder.now, apart=faults_apart)
        self.threads: list[threading.Thread] = []
        self._names = 0
        self.errors: list[str] = []

    # -- instances ----------------------------------------------------------------------------
    def _new_name(self, prefix: str) -> str:
        self._names += 1
        return f"{prefix}{self._names}"

    def start_instance(self, *, wait: bool = False) -> WebInstance | None:
        with self.lock:
            if not self.free_slots:
                return None
            slot = self.free_slots.pop(0)
            name = self._new_name("web")
            namespace = self.network.namespaces[slot] if self.network else None
            instance = WebInstance(name, slot, self.haproxy.slot_ports[slot], self.env, self.dir / name, namespace)
            instance.start()
            self.instances[name] = instance
            self.records[name] = InstanceRecord(
                name=name, slot=slot, port=instance.port, pid=instance.pid, started=self.recorder.now()
            )
        self.recorder.event("scale_up", name, slot=slot, pid=instance.pid)
        thread = threading.Thread(target=self._bring_up, args=(instance,), name=f"up-{name}", daemon=True)
        thread.start()
        if wait:
            thread.join()
        return instance

    def _bring_up(self, instance: WebInstance) -> None:
        record = self.records[instance.name]
        if wait_until(lambda: not instance.alive() or instance.ready(), timeout=90, interval=0.2) and instance.alive():
            record.ready = self.recorder.now()
            self.haproxy.set_state(instance.slot, "ready")
            self.recorder.event("ready", instance.name, seconds=round(record.ready - record.started, 2))
            return
        if record.killed is None:
            self.errors.append(f"{instance.name} never became ready (log: {instance.dir / 'gunicorn.log'})")
            self.recorder.event("start_failed", instance.name)
            with self.lock:
                self.instances.pop(instance.name, None)
            instance.kill()
            self._release_slot(instance)

    def _release_slot(self, instance: WebInstance) -> None:
        self.haproxy.set_state(instance.slot, "maint")
        with self.lock:
            self.free_slots.append(instance.slot)

    def serving(self) -> list[WebInstance]:
        """Instances behind the load balancer that a scale-in or a kill may pick."""
        with self.lock:
            return [i for i in self.instances.values() if self.records[i.name].ready is not None and i.alive()]

    def up_in_haproxy(self) -> int:
        with contextlib.suppress(OSError):
            return sum(1 for status in self.haproxy.server_status().values() if status.startswith("UP"))
        return 0

    def scale_in(self, instance: WebInstance, *, final: bool = False) -> None:
        with self.lock:
            if self.instances.pop(instance.name, None) is None:
                return
            self.draining[instance.name] = instance
        thread = threading.Thread(
            target=self._drain, args=(instance, final), name=f"drain-{instance.name}", daemon=True
        )
        thread.start()
        self.threads.append(thread)

    def _drain(self, instance: WebInstance, final: bool = False) -> None:
        record = self.records[instance.name]
        record.drain_start = self.recorder.now()
        self.recorder.event("drain", instance.name)
        if self.unsafe_scale_in and not final:
            # A broken platform, to prove the checker: "scale-in" with no drain at all.
            instance.kill()
            record.exit_code = instance.process.returncode if instance.process else None
            record.exited = self.recorder.now()
            with self.lock:
                self.draining.pop(instance.name, None)
            self._release_slot(instance)
            return
        instance.mark_draining()
        if self.drain_command and not final:
            # The rest of the preStop hook, in the background: the flag above already turned
            # readiness 503.
            prestop = threading.Thread(target=self._prestop, args=(instance,), name=f"prestop-{instance.name}")
            prestop.daemon = True
            prestop.start()
        # The load balancer must have stopped sending before the listener closes (preStop).
        wait_until(
            lambda: not self.haproxy.server_status().get(instance.slot, "").startswith("UP"), timeout=10, interval=0.1
        )
        time.sleep(self.drain_delay)
        record.sigterm = self.recorder.now()
        instance.terminate()
        assert instance.process is not None
        try:
            instance.process.wait(timeout=max(1.0, self.budget - (record.sigterm - record.drain_start)))
        except Exception:
            record.forced_kill_at_budget = True
            self.recorder.event("sigkill_at_budget", instance.name)
            instance.kill()
        record.exit_code = instance.process.returncode
        record.exited = self.recorder.now()
        self.recorder.event(
            "stopped", instance.name, code=record.exit_code, seconds=round(record.exited - record.sigterm, 2)
        )
        with self.lock:
            self.draining.pop(instance.name, None)
        self._release_slot(instance)

    def _prestop(self, instance: WebInstance) -> None:
        """What `manage.py drain --pid <pid> --no-wait` does after the flag: the instance's
        draining state in the registry, with the service's own function, in the harness (which
        has the service's settings). The command itself, a Django start-up of 1.6 s of CPU for
        one UPDATE, was a tenth of a 10-minute run's CPU at 40 drains; its own tests are in
        tests/lifecycle."""
        from django.db import connection

        from lifecycle.models import InstanceState
        from lifecycle.services import instance_set_state

        try:
            data = json.loads((instance.run_dir / f"gunicorn-{instance.pid}.json").read_text())
            instance_set_state(instance_id=data["instance_id"], state=InstanceState.DRAINING, detail="preStop drain")
        except Exception as exc:
            # As the command: draining must not depend on PostgreSQL (or on the file, gone with
            # an instance that already exited).
            self.recorder.event("prestop_state_not_recorded", instance.name, error=repr(exc)[:200])
        finally:
            connection.close()

    def kill(self, instance: WebInstance) -> None:
        record = self.records[instance.name]
        with self.lock:
            self.instances.pop(instance.name, None)
        record.killed = self.recorder.now()
        instance.kill()
        record.exited = self.recorder.now()
        self.recorder.event("sigkill_web", instance.name, pid=instance.pid)
        # The pod object goes away a little later; until then HAProxy's checks see it dead.
        timer = threading.Timer(3.0, self._release_slot, args=(instance,))
        timer.daemon = True
        timer.start()

    # -- workers ------------------------------------------------------------------------------
    def start_worker(self, kind: str) -> None:
        name = self._new_name(kind)
        namespace = None
        if self.network:
            with self.lock:
                taken = {w.namespace.name for w in self.workers.values() if w.namespace and w.alive()}
            spare = self.network.namespaces[len(self.haproxy.slot_ports) :]
            namespace = next((ns for ns in spare if ns.name not in taken), None)
        worker = WorkerProcess(name, self.env, self.dir / name, self.background[kind][0], namespace)
        worker.kind = kind
        worker.start()
        with self.lock:
            self.workers[name] = worker
        self.recorder.event("worker_start", name, pid=worker.process.pid if worker.process else 0)

    # -- loops --------------------------------------------------------------------------------
    def run_background(self) -> None:
        for target in (self._autoscale_loop, self._fault_loop):
            thread = threading.Thread(target=target, name=target.__name__, daemon=True)
            thread.start()
            self.threads.append(thread)

    def _autoscale_loop(self) -> None:
        while not self.stop_event.wait(0.5):
            t = self.recorder.now()
            with self.lock:
                current = len(self.instances)
                starting = sum(1 for i in self.instances.values() if self.records[i.name].ready is None)
                dead_workers = [n for n, w in self.workers.items() if not w.alive()]
            desired = self.schedule.desired(t)
            if current < desired and starting == 0:
                self.start_instance()
            elif current > desired:
                ready = self.serving()
                # A PodDisruptionBudget: never drain the last instance that serves.
                if len(ready) >= 2 and self.up_in_haproxy() >= 2:
                    self.scale_in(self.rng.choice(sorted(ready, key=lambda i: i.name)))
            for name in dead_workers:
                with self.lock:
                    self.workers.pop(name, None)
            for kind, (_, count) in self.background.items():
                with self.lock:
                    running = sum(1 for w in self.workers.values() if w.kind == kind)
                if running < count:
                    self.start_worker(kind)

    def _fault_loop(self) -> None:
        plan = sorted(
            [(t, "kill") for t in self.schedule.web_kills]
            + [(t, "kill_worker") for t in self.schedule.worker_kills if self.background]
            + [(t, "pause") for t in self.schedule.pauses]
            + [(t, "redis_restart") for t in self.schedule.redis_restarts]
            + [(t, "postgres_restart") for t in self.schedule.postgres_restarts if self.postgres]
            + [
                (t, "postgres_failover")
                for t in self.schedule.postgres_failovers
                if isinstance(self.postgres, PostgresPair)
            ]
            + [(t, "redis_failover") for t in self.schedule.redis_failovers if hasattr(self.redis, "kill_primary")]
        )
        for when, fault in plan:
            while not self.stop_event.is_set() and self.recorder.now() < when:
                time.sleep(0.05)
            if self.stop_event.is_set():
                return
            dependency = fault in DEPENDENCY_FAULTS
            if dependency:
                waited = self.gate.enter("dependency", self.stop_event)
                if waited is None:
                    return
                if waited:
                    self.log(f"{fault} waited {waited} s for a network fault to end")
            try:
                getattr(self, f"_fault_{fault}")()
            except Exception as exc:
                self.errors.append(f"fault {fault} failed: {exc!r}")
            finally:
                if dependency:
                    self.gate.leave("dependency")

    def _pick_victim(self) -> WebInstance | None:
        """A serving instance, but never the only one (the fault is a kill, not an outage)."""
        for _ in range(50):
            ready = sorted(self.serving(), key=lambda i: i.name)
            if len(ready) >= 2:
                return self.rng.choice(ready)
            if self.stop_event.wait(0.2):
                return None
        return None

    def _fault_kill(self) -> None:
        victim = self._pick_victim()
        if victim is not None:
            self.kill(victim)

    def _fault_kill_worker(self) -> None:
        with self.lock:
            alive = sorted((w for w in self.workers.values() if w.alive()), key=lambda w: w.name)
        if alive:
            worker = self.rng.choice(alive)
            worker.kill()
            self.recorder.event("sigkill_worker", worker.name)

    def _fault_pause(self) -> None:
        # In a thread of its own: the next faults keep their schedule.
        thread = threading.Thread(target=self._pause, name="resume-pause", daemon=True)
        thread.start()
        self.threads.append(thread)

    def _pause(self) -> None:
        """SIGSTOP a whole instance beyond the lock TTL (as a GC pause or CPU throttling would),
        at the moment staff start closing and executing a proposal, so it may hold the lock."""
        if self.pause_trigger is not None:
            self.pause_trigger.clear()
            self.pause_trigger.wait(timeout=15)
        if self.stop_event.is_set():
            return
        victim = self._pick_victim()
        if victim is None:
            return
        start = self.recorder.now()
        victim.pause()
        self.recorder.event("pause", victim.name, seconds=self.pause_seconds)

        self.stop_event.wait(self.pause_seconds)
        victim.resume()
        self.records[victim.name].paused.append((start, self.recorder.now()))
        self.recorder.event("resume", victim.name)

    def _dependency_restart(
        self, kind: str, restart: Callable[[], None], settle: Callable[[], None] | None = None
    ) -> None:
        window: dict = {"kind": kind, "start": self.recorder.now(), "end": None, "settled": None}
        self.dependency_windows.append(window)
        restart()
        window["end"] = self.recorder.now()
        self.recorder.event(kind, kind, downtime=round(window["end"] - window["start"], 2))
        if settle is not None:
            settle()
        # Requests may fail (503) until every serving instance is ready again.
        wait_until(lambda: self.up_in_haproxy() >= max(1, len(self.serving())), timeout=30, interval=0.2)
        window["settled"] = self.recorder.now()

    def _fault_redis_restart(self) -> None:
        group = self.redis
        if not isinstance(group, RedisGroup):
            self._dependency_restart("redis_restart", group.restart)
            return
        before = group.primary_port()

        def settle() -> None:
            # The restart is shorter than the Sentinels' down-after time, so no failover is meant;
            # on a busy machine their pings can still miss it and they fail over to the replica,
            # while the restarted server stays a primary until they reconfigure it (their 10 s
            # INFO period). Until a replica is in sync again, writes that wait for one are 503s
            # of this fault.
            self.stop_event.wait(group.down_after_ms / 1000 + 1)
            wait_until(group.in_sync, timeout=30, interval=0.1)
            after = group.primary_port()
            if after != before:
                self.recorder.event("redis_restart_failed_over", f"redis:{before}", promoted_port=after)

        self._dependency_restart("redis_restart", group.restart, settle)

    def _fault_redis_failover(self) -> None:
        """SIGKILL of the Redis primary under load; the Sentinels promote its replica; the dead one
        starts again as a replica of the new primary. The window's `promoted` and `end` say when."""
        group = self.redis
        assert isinstance(group, RedisGroup)

        # Not while an instance is paused: requests queued behind its locks would be counted as
        # the failover's, and its figures (seconds until writes succeed) would be the pause's;
        # nor within the 3 s after a resume that the checker still gives to the pause.
        def clear_of_pauses() -> bool:
            _, events = self.recorder.snapshot()
            pauses = [e for e in events if e.kind in ("pause", "resume")]
            if sum(e.kind == "pause" for e in pauses) > sum(e.kind == "resume" for e in pauses):
                return False  # an instance is stopped right now
            resumed = [e.t for e in pauses if e.kind == "resume"]
            return self.recorder.now() >= max(resumed, default=0.0) + 3.5

        while not clear_of_pauses() and not self.stop_event.wait(0.1):
            pass
        if self.stop_event.is_set():
            return
        window: dict = {"kind": "redis_failover", "start": self.recorder.now(), "end": None, "settled": None}
        self.dependency_windows.append(window)
        dead, successor = group.kill_primary()
        if not wait_until(lambda: group.promoted(successor), timeout=30, interval=0.05):
            self.errors.append(f"the Sentinels did not promote the replica on {successor.port} within 30 s")
        window["promoted"] = self.recorder.now()
        group.rejoin(dead, successor)
        wait_until(group.in_sync, timeout=30, interval=0.1)
        window["end"] = self.recorder.now()
        self.recorder.event(
            "redis_failover",
            f"redis:{dead.port}",
            promoted_port=successor.port,
            promoted_after=round(window["promoted"] - window["start"], 2),
            replica_back_after=round(window["end"] - window["start"], 2),
        )
        wait_until(lambda: self.up_in_haproxy() >= max(1, len(self.serving())), timeout=30, interval=0.2)
        window["settled"] = self.recorder.now()

    def _fault_postgres_restart(self) -> None:
        assert self.postgres is not None
        self._dependency_restart("postgres_restart", self.postgres.restart)

    def _fault_postgres_failover(self) -> None:
        """The primary stopped with `immediate`, its synchronous standby promoted, the old primary
        rebuilt as the new standby. Requests fail (503) from the stop until the promoted standby
        serves and every instance is ready again; the window records each step's time."""
        pair = self.postgres
        assert isinstance(pair, PostgresPair)
        window: dict = {"kind": "postgres_failover", "start": self.recorder.now(), "end": None, "settled": None}
        self.dependency_windows.append(window)
        old = pair.primary.dir.name

        promoted = threading.Event()
        outcome: dict = {}

        def step(name: str) -> None:
            window[name] = self.recorder.now()
            if name == "primary_stopped":
                self.recorder.event("postgres_failover", old)
            if name == "standby_promoted":
                window["end"] = window[name]
                promoted.set()

        def fail_over() -> None:
            try:
                outcome["steps"] = pair.fail_over(on_step=step)
            except Exception as exc:
                outcome["error"] = exc
            promoted.set()

        # The rebuild of the old primary goes on while the instances come back: their readiness
        # is measured from the promotion, and no other fault starts before the rebuild is done.
        thread = threading.Thread(target=fail_over, name="postgres-failover", daemon=True)
        thread.start()
        promoted.wait(timeout=120)
        if window["end"] is not None:
            wait_until(lambda: self.up_in_haproxy() >= max(1, len(self.serving())), timeout=30, interval=0.2)
            window["settled"] = self.recorder.now()
        thread.join(timeout=300)
        if "error" in outcome:
            raise outcome["error"]
        self.recorder.event("postgres_failover_done", pair.primary.dir.name, **outcome.get("steps", {}))

    # -- end ----------------------------------------------------------------------------------
    def stop_faults(self) -> None:
        self.stop_event.set()
        for thread in list(self.threads):
            if thread.name in ("_autoscale_loop", "_fault_loop") or thread.name.startswith("resume-"):
                thread.join(timeout=60)

    def shutdown(self) -> None:
        """Scale everything in gracefully (no traffic left), then stop the workers."""
        self.stop_event.set()
        with self.lock:
            remaining = list(self.instances.values())
        for instance in remaining:
            self.scale_in(instance, final=True)
        for thread in list(self.threads):
            thread.join(timeout=self.budget + 15)
        with self.lock:
            workers = list(self.workers.values())
        for worker in workers:
            worker.stop(timeout=self.budget)

"""The platform: an autoscaler that follows a load schedule, and faults on a seeded schedule.

Scale-up: start an instance, wait for its own `/ready` (start-up recovery runs before it), then
put it behind HAProxy. Scale-in, the Kubernetes way: the pod is marked draining (preStop:
readiness 503), the load balancer stops sending (HAProxy's health check sees it), then SIGTERM,
then SIGKILL when the grace budget runs out. Faults do not warn anyone.
"""

from __future__ import annotations

import contextlib
import random
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from chaos.recorder import Recorder
from chaos.topology import HAProxy, PostgresCluster, RedisServer, WebInstance, WorkerProcess, wait_until


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
    exit_code: int | None = None
    forced_kill_at_budget: bool = False


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
        return cls(duration, levels, web_kills, worker_kills, pauses, redis, postgres)

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
        redis: RedisServer,
        postgres: PostgresCluster | None,
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
        self.lock = threading.RLock()
        self.instances: dict[str, WebInstance] = {}  # starting or serving (not draining, not dead)
        self.records: dict[str, InstanceRecord] = {}
        self.draining: dict[str, WebInstance] = {}
        self.workers: dict[str, WorkerProcess] = {}
        self.free_slots = list(range(len(haproxy.slot_ports)))
        self.dependency_windows: list[dict] = []  # redis/postgres restarts: [start, settled]
        self.stop_event = threading.Event()
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
            instance = WebInstance(name, slot, self.haproxy.slot_ports[slot], self.env, self.dir / name)
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
            # The preStop hook proper (it also records the draining state in the registry), in the
            # background: the flag above already turned readiness 503, and a Django start-up on a
            # busy machine must not eat the grace budget.
            threading.Thread(
                target=instance.run_manage,
                args=(["drain", "--pid", str(instance.pid), "--no-wait"], 20),
                name=f"prestop-{instance.name}",
                daemon=True,
            ).start()
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
        worker = WorkerProcess(name, self.env, self.dir / name, self.background[kind][0])
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
        )
        for when, fault in plan:
            while not self.stop_event.is_set() and self.recorder.now() < when:
                time.sleep(0.05)
            if self.stop_event.is_set():
                return
            try:
                getattr(self, f"_fault_{fault}")()
            except Exception as exc:
                self.errors.append(f"fault {fault} failed: {exc!r}")

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

    def _dependency_restart(self, kind: str, restart: Callable[[], None]) -> None:
        window = {"kind": kind, "start": self.recorder.now(), "end": None, "settled": None}
        self.dependency_windows.append(window)
        restart()
        window["end"] = self.recorder.now()
        self.recorder.event(kind, kind, downtime=round(window["end"] - window["start"], 2))
        # Requests may fail (503) until every serving instance is ready again.
        wait_until(lambda: self.up_in_haproxy() >= max(1, len(self.serving())), timeout=30, interval=0.2)
        window["settled"] = self.recorder.now()

    def _fault_redis_restart(self) -> None:
        self._dependency_restart("redis_restart", self.redis.restart)

    def _fault_postgres_restart(self) -> None:
        assert self.postgres is not None
        self._dependency_restart("postgres_restart", self.postgres.restart)

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

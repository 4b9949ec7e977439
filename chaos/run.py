"""`python -m chaos`: one chaos run, from an empty topology to the report and its exit code."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import requests

from chaos import checker, netfaults, report
from chaos.client import Api
from chaos.cpu import CpuSampler
from chaos.flows import FLOWS, Flow, User, schema_operations
from chaos.recorder import ACKED, FAULT_KINDS, Recorder
from chaos.scaler import Platform, Schedule
from chaos.topology import ROOT, HAProxy, PostgresCluster, PostgresPair, RedisGroup, free_port, pid_alive, wait_until

FAULTS = (
    "kill",
    "kill_worker",
    "pause",
    "redis_restart",
    "postgres_restart",
    "postgres_failover",
    "redis_failover",
)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m chaos", description=__doc__)
    parser.add_argument("--duration", type=float, default=float(os.environ.get("DURATION", 60)))
    parser.add_argument("--seed", type=int, default=int(os.environ.get("SEED", 1)))
    parser.add_argument("--report-dir", type=Path, default=None, help="default reports/chaos-<timestamp>")
    parser.add_argument("--clients", type=int, default=10, help="concurrent user clients")
    parser.add_argument("--staff", type=int, default=3, help="concurrent staff clients")
    parser.add_argument("--min-instances", type=int, default=2)
    parser.add_argument("--max-instances", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1, help="job worker processes (when present)")
    parser.add_argument("--exporters", type=int, default=1, help="outbox exporter processes (when present)")
    parser.add_argument("--no-bigquery", action="store_true", help="no BigQuery emulator: check the outbox only")
    parser.add_argument("--kill-every", type=float, default=25.0, help="mean seconds between web SIGKILLs")
    parser.add_argument("--pause-seconds", type=float, default=5.0, help="SIGSTOP length (beyond the lock TTL)")
    parser.add_argument("--drain-delay", type=float, default=1.0, help="seconds between LB removal and SIGTERM")
    parser.add_argument("--budget", type=float, default=30.0, help="grace budget before SIGKILL on scale-in")
    parser.add_argument(
        "--unsafe-scale-in", action="store_true", help="scale in by SIGKILL, no drain: proves the checker catches it"
    )
    parser.add_argument("--keep-data", action="store_true", help="keep the PostgreSQL cluster's data directory")
    parser.add_argument(
        "--redis-min-replicas-ack",
        type=int,
        default=int(os.environ.get("REDIS_MIN_REPLICAS_ACK", 1)),
        help="the service's REDIS_MIN_REPLICAS_ACK (WAIT after each durable Redis write); 0: asynchronous only",
    )
    for fault in FAULTS:
        parser.add_argument(f"--no-{fault.replace('_', '-')}", action="store_true", help=f"turn off the {fault} fault")
    netfaults.add_arguments(parser)
    return parser.parse_args(argv)


class Run:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.recorder = Recorder()
        stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
        self.report_dir: Path = (args.report_dir or ROOT / "reports" / f"chaos-{stamp}").resolve()
        self.report_dir.mkdir(parents=True, exist_ok=True)
        (self.report_dir / "harness.pid").write_text(str(os.getpid()))
        self.stop_clients = threading.Event()
        self.errors: list[str] = []  # harness-side problems (a flow step raised): violations too
        self.operations: set[str] = set()
        self.commands: set[str] = set()
        self.flows: list[Flow] = []
        self.skipped: dict[str, str] = {}
        self.users: list[User] = []
        self.staff: list[User] = []
        # The payment processor: delivers signed webhooks, with no user credential.
        self.processor: Api | None = None
        self.redis: RedisGroup | None = None
        self.postgres: PostgresCluster | PostgresPair | None = None
        self.haproxy: HAProxy | None = None
        self.platform: Platform | None = None
        self.network: Any = None  # chaos.netns.Network: each instance's namespace (chaos/netfaults.py)
        self.netfaults: netfaults.NetworkFaults | None = None
        self.env: dict[str, str] = {}
        self.load_end: float | None = None
        self.outbox: dict[str, Any] = {}
        self.base_url = ""
        self.bigquery_url: str | None = None  # the emulator's REST URL when the run has one
        self.bigquery: Any = None
        self.database = f"omk_chaos_{args.seed}"
        self.cpu: dict[str, Any] = {}  # chaos/cpu.py: CPU seconds of the run's processes during the load

    def log(self, message: str) -> None:
        print(f"[{self.recorder.now():7.1f}s] {message}", flush=True)

    # -- topology -----------------------------------------------------------------------------
    def start_topology(self) -> None:
        _stop_stale_clusters(self.report_dir.parent)
        # A primary, its replica and three Sentinels: the service finds the primary through them.
        self.redis = RedisGroup(self.report_dir / "redis")
        # With the failover fault: a primary and a synchronous standby, reached by libpq's
        # multi-host URL; without it one cluster, as before.
        pair = not self.args.no_postgres_failover
        server = self.postgres = PostgresPair(self.report_dir) if pair else PostgresCluster(self.report_dir / "pg")

        def postgres() -> None:
            if isinstance(server, PostgresCluster):
                server.init()
            server.start()
            server.create_database(self.database)

        # Independent start-ups side by side: CI's whole run has 90 s.
        with ThreadPoolExecutor(3) as pool:
            for future in [pool.submit(self.redis.start), pool.submit(postgres), pool.submit(self.start_bigquery)]:
                future.result()
        sentinels = ",".join(f"{host}:{port}" for host, port in self.redis.addresses)
        self.log(
            f"Redis primary on {self.redis.primary.port}, replica on {self.redis.replica.port} (appendonly, "
            f"appendfsync always), Sentinels on {sentinels}; REDIS_MIN_REPLICAS_ACK={self.args.redis_min_replicas_ack}"
        )
        if isinstance(self.postgres, PostgresPair):
            ports = " and ".join(str(node.port) for node in self.postgres.nodes)
            self.log(f"PostgreSQL primary and synchronous standby of the run's own on {ports}, db {self.database}")
        else:
            self.log(f"PostgreSQL cluster of the run's own on {self.postgres.port}, database {self.database}")
        if self.bigquery:
            self.log(f"BigQuery emulator on {self.bigquery.rest_port} (gRPC {self.bigquery.grpc_port})")
        self.env.update(
            {
                "DJANGO_SETTINGS_MODULE": "chaos.settings",
                "DATABASE_URL": self.postgres.url(self.database),
                # The Sentinels name the primary; REDIS_URL gives only the database number.
                "REDIS_URL": self.redis.primary.url,
                "REDIS_SENTINELS": sentinels,
                "REDIS_SENTINEL_MASTER": self.redis.master_name,
                "REDIS_MIN_REPLICAS_ACK": str(self.args.redis_min_replicas_ack),
                "WEB_CONCURRENCY": "2",
                "GUNICORN_THREADS": "4",
                "LOG_LEVEL": "WARNING",
                "DB_POOL_MIN_SIZE": "1",
                "DB_POOL_MAX_SIZE": "5",
                "CHAOS_SEED": str(self.args.seed),
                # The harness waits for HAProxy to take an instance out before SIGTERM (the
                # preStop), so the instance's own drain delay only covers the last probe period.
                "DRAIN_DELAY": "1",
            }
        )
        with ThreadPoolExecutor(2) as pool:
            jobs = [pool.submit(self.manage, ["migrate", "--no-input"])]
            if self.bigquery:
                jobs.append(pool.submit(self.manage, ["bigquery_setup"]))
            for job in jobs:
                job.result()
        # The harness reads the stores directly for its checks, with the service's own models.
        os.environ.update(self.env)
        import django

        django.setup()
        from django.core.management import get_commands

        self.commands = set(get_commands())
        # What the instances will use, read through the service's own settings from the same
        # environment: a flag that never reaches them must not be reported as if it had.
        from core.redis import replicas_to_ack

        self.redis_min_replicas_ack = replicas_to_ack()
        if self.redis_min_replicas_ack != self.args.redis_min_replicas_ack:
            raise RuntimeError(
                f"--redis-min-replicas-ack {self.args.redis_min_replicas_ack} does not reach the service: "
                f"its settings read {self.redis_min_replicas_ack}"
            )
        slots = [free_port() for _ in range(self.args.max_instances * 2 + 4)]
        self.network = netfaults.create_network(self)
        hosts = [ns.address for ns in self.network.namespaces[: len(slots)]] if self.network else None
        if self.network:
            self.log(f"network namespaces: {len(self.network.namespaces)} on bridge {self.network.host}")
        self.haproxy = HAProxy(self.report_dir / "haproxy", slots, slot_hosts=hosts)
        self.haproxy.start()
        self.base_url = self.haproxy.url
        self.log(f"HAProxy on {self.haproxy.port}, {len(slots)} server slots, checks GET /ready every 500 ms")

    def start_bigquery(self) -> None:
        """The BigQuery emulator on free ports (9050/9060 belong to `make run` and the outbox
        tests), when the outbox exporter exists. Without it, events are checked in the outbox."""
        import importlib.util

        if self.args.no_bigquery or importlib.util.find_spec("lifecycle.outbox.exporter") is None:
            # Never let an exporter reach another run's emulator on the default port.
            self.env["BIGQUERY_EMULATOR_URL"] = f"http://127.0.0.1:{free_port()}"
            self.env["BIGQUERY_EMULATOR_GRPC"] = f"127.0.0.1:{free_port()}"
            return
        from tests.support.bqemulator import BigQueryEmulator

        self.bigquery = BigQueryEmulator(self.report_dir / "bigquery")
        self.bigquery.start()
        self.bigquery_url = self.bigquery.url
        self.env.update(
            {
                "BIGQUERY_EMULATOR_URL": self.bigquery.url,
                "BIGQUERY_EMULATOR_GRPC": self.bigquery.grpc_address,
                "BIGQUERY_PROJECT": self.bigquery.project,
                "BIGQUERY_DATASET": f"omk_chaos_{self.args.seed}",
            }
        )

    def manage(self, args: list[str]) -> None:
        result = subprocess.run(
            [sys.executable, "manage.py", *args],
            cwd=ROOT,
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=300,
        )
        if result.returncode != 0:
            raise RuntimeError(f"manage.py {' '.join(args)} failed:\n{result.stdout}\n{result.stderr}")

    def drain_outbox(self, timeout: float = 60.0) -> dict[str, Any]:
        """Wait for the exporters to empty the outbox (every acknowledged event then in BigQuery)."""
        if not self.bigquery_url:
            return {"exporter": "none (no BigQuery emulator): events checked in the outbox"}
        from lifecycle.outbox.models import OutboxEvent

        started = time.monotonic()
        pending = quarantined = -1
        while time.monotonic() - started < timeout:
            pending = OutboxEvent.objects.filter(exported_at__isnull=True, quarantined_at__isnull=True).count()
            quarantined = OutboxEvent.objects.filter(quarantined_at__isnull=False).count()
            if pending == 0:
                break
            time.sleep(0.5)
        if pending:
            self.errors.append(f"outbox not drained after {timeout:.0f} s: {pending} events pending")
        return {
            "exporter": "outbox_export --loop processes",
            "pending": pending,
            "quarantined": quarantined,
            "exported": OutboxEvent.objects.filter(exported_at__isnull=False).count(),
            "drain_seconds": round(time.monotonic() - started, 2),
        }

    def start_platform(self) -> None:
        assert self.haproxy
        assert self.redis
        args = self.args
        faults = {fault: not getattr(args, f"no_{fault}") for fault in FAULTS}
        schedule = Schedule.build(
            seed=args.seed,
            duration=args.duration,
            min_instances=args.min_instances,
            max_instances=args.max_instances,
            kill_every=args.kill_every,
            faults=faults,
        )
        if "locks" not in self.features():
            schedule.pauses = []
        background: dict[str, tuple[list[str], int]] = {}
        if "worker" in self.commands:
            background["worker"] = (["worker"], args.workers)
        if self.bigquery_url:
            # Exporters next to the worker (they use SKIP LOCKED batches, so several are fine);
            # SIGKILLed like workers, so a batch cut between BigQuery and the marking happens.
            background["exporter"] = (["outbox_export", "--loop"], args.exporters)
        self.platform = Platform(
            recorder=self.recorder,
            haproxy=self.haproxy,
            redis=self.redis,
            postgres=self.postgres,
            env=self.env,
            directory=self.report_dir / "instances",
            schedule=schedule,
            seed=args.seed,
            budget=args.budget,
            drain_delay=args.drain_delay,
            pause_seconds=args.pause_seconds,
            background=background,
            drain_command="drain" in self.commands,
            unsafe_scale_in=args.unsafe_scale_in,
            network=self.network,
            faults_apart=not args.overlap_faults,
            log=self.log,
        )
        first = [self.platform.start_instance() for _ in range(args.min_instances)]
        if not wait_until(lambda: self.platform.up_in_haproxy() >= args.min_instances, timeout=120, interval=0.2):
            logs = "\n".join(str(i.dir / "gunicorn.log") for i in first if i)
            raise RuntimeError(f"instances did not become ready behind HAProxy; logs:\n{logs}")
        for kind, (_, count) in background.items():
            for _ in range(count):
                self.platform.start_worker(kind)
        workers = ", ".join(f"{count} {kind}" for kind, (_, count) in background.items()) or "none"
        self.log(f"{args.min_instances} instances serving; background processes: {workers}")

    def features(self) -> set[str]:
        """Pieces of the service present in this checkout (probed, never assumed)."""
        import importlib.util

        found = set()
        for feature, module in (
            ("locks", "lifecycle.locks"),
            ("outbox", "lifecycle.outbox"),
            ("queues", "lifecycle.queues"),
            ("idempotency", "lifecycle.idempotency"),
        ):
            with contextlib.suppress(ImportError, ValueError):
                if importlib.util.find_spec(module) is not None:
                    found.add(feature)
        return found

    # -- flows --------------------------------------------------------------------------------
    def discover(self) -> None:
        response = requests.get(self.base_url + "/api/openapi.json", timeout=10)
        if response.status_code == 200:
            self.operations = schema_operations(response.json())
        self.log(f"OpenAPI: {len(self.operations)} operations; commands: worker={'worker' in self.commands}")
        for flow_class in FLOWS:
            missing = [op for op in flow_class.requires if op not in self.operations]
            if missing:
                self.skipped[flow_class.name] = "missing " + ", ".join(missing)
            else:
                self.flows.append(flow_class(self))
        skipped = f" (skipped: {', '.join(self.skipped)})" if self.skipped else ""
        self.log("flows: " + ", ".join(f.name for f in self.flows) + skipped)

    def make_users(self) -> None:
        from django.contrib.auth import get_user_model

        model = get_user_model()
        self.processor = Api(self.base_url, self.recorder, stop=self.stop_clients)
        login = "POST /api/auth/login" in self.operations
        for i in range(self.args.clients + self.args.staff):
            staff = i >= self.args.clients
            name = f"{'staff' if staff else 'user'}{i}-s{self.args.seed}"
            password = f"pw-{random.Random(i).getrandbits(64):x}"
            model.objects.create_user(username=name, password=password, is_staff=staff)
            user = User(name=name, password=password, staff=staff)
            user.api = Api(self.base_url, self.recorder, stop=self.stop_clients)
            # Half the users log in with a session (in Redis: it must survive the restart), staff
            # and the other half use bearer tokens as machine clients do.
            if login and ((not staff and i % 2 == 0) or "issue_token" not in self.commands):
                credentials = {"username": name, "password": password}
                op = user.api.call("auth", "login", "POST", "/api/auth/login", json=credentials)
                if op.outcome != ACKED:
                    raise RuntimeError(f"login of {name} failed: {op.status} {op.body}")
                user.state["session"] = True
            elif "issue_token" in self.commands:
                user.api.use_token(_issue_token(name))
            (self.staff if staff else self.users).append(user)

    def start_clients(self) -> list[threading.Thread]:
        threads = []
        for index, user in enumerate(self.users + self.staff):
            rng = random.Random(self.args.seed * 1000 + index)
            target = self._staff_loop if user.staff else self._user_loop
            thread = threading.Thread(target=target, args=(user, rng), name=f"client-{user.name}", daemon=True)
            thread.start()
            threads.append(thread)
        return threads

    def _load(self) -> float:
        assert self.platform is not None
        return self.platform.schedule.load(self.recorder.now(), self.args.max_instances)

    def _user_loop(self, user: User, rng: random.Random) -> None:
        flows = [f for f in self.flows if type(f).user_step is not Flow.user_step]
        if not flows:
            return
        weights = [f.weight for f in flows]
        while not self.stop_clients.is_set():
            flow = rng.choices(flows, weights)[0]
            try:
                flow.user_step(user, rng)
            except Exception:
                self.errors.append(f"{flow.name} user step raised:\n{traceback.format_exc()}")
                self.stop_clients.wait(1)
            self.stop_clients.wait(rng.uniform(0.05, 0.4) / self._load())

    def _staff_loop(self, staff: User, rng: random.Random) -> None:
        flows = [f for f in self.flows if type(f).staff_step is not Flow.staff_step]
        while flows and not self.stop_clients.is_set():
            did = False
            for flow in flows:
                try:
                    did = flow.staff_step(staff, rng) or did
                except Exception:
                    self.errors.append(f"{flow.name} staff step raised:\n{traceback.format_exc()}")
                    self.stop_clients.wait(1)
            # Idle staff poll often, so several of them race for the same close/execute.
            self.stop_clients.wait(0.3 if did else 0.05)

    def _progress(self) -> None:
        assert self.platform is not None
        last_print = 0.0
        while not self.stop_clients.wait(0.5):
            up = self.platform.up_in_haproxy()
            with self.platform.lock:
                running = len(self.platform.instances)
                draining = len(self.platform.draining)
                workers = sum(1 for w in self.platform.workers.values() if w.alive())
            self.recorder.sample(up=up, running=running, draining=draining, workers=workers)
            now = self.recorder.now()
            if now - last_print >= 5:
                last_print = now
                counts = self.recorder.counts()
                _, events = self.recorder.snapshot()
                kinds = [e.kind for e in events]
                faults = {k: kinds.count(k) for k in sorted(FAULT_KINDS) if kinds.count(k)}
                self.log(
                    f"instances {up} up, {running} running, {draining} draining, {workers} workers | "
                    f"acked {counts['acked']} | failed attempts {counts['failed_attempts']} | "
                    f"drains {kinds.count('drain')} | faults {counts['faults']} {faults or ''}"
                )

    # -- the whole run ------------------------------------------------------------------------
    def execute(self) -> int:
        args = self.args
        self.log(f"chaos run: seed {args.seed}, {args.duration:.0f} s, report {self.report_dir}")
        self.start_topology()
        self.start_platform()
        self.discover()
        self.make_users()
        for flow in self.flows:
            flow.setup()
        from django.db import connections

        connections.close_all()
        assert self.platform is not None
        # The schedule's clock starts with the load.
        self.recorder.event("load_start")
        load_t0 = self.recorder.now()
        self.platform.schedule = _shift(self.platform.schedule, load_t0)
        if any(flow.name == "proposals" for flow in self.flows):
            self.platform.pause_trigger = threading.Event()
        clients = self.start_clients()
        self.platform.run_background()
        if self.network:
            self.netfaults = netfaults.NetworkFaults(self, self.platform, self.network)
            self.netfaults.start(load_t0)
        progress = threading.Thread(target=self._progress, name="progress", daemon=True)
        progress.start()
        assert self.postgres is not None
        nodes = self.postgres.nodes if isinstance(self.postgres, PostgresPair) else [self.postgres]
        sampler = CpuSampler([str(node.datadir) for node in nodes]).start()
        end = load_t0 + args.duration
        while self.recorder.now() < end:
            time.sleep(0.2)
        self.log("load ends: clients finish their current operation, faults stop")
        self.stop_clients.set()
        self.platform.stop_faults()
        if self.netfaults:
            self.netfaults.stop()
        for thread in clients:
            thread.join(timeout=90)
        self.load_end = self.recorder.now()
        self.recorder.event("load_end")
        self.cpu = sampler.stop()
        self.log("clients stopped; letting queued work settle")
        # The harness's own connections may predate the PostgreSQL restart.
        from django.db import connections

        connections.close_all()
        for flow in self.flows:
            try:
                flow.finish()
            except Exception:
                self.errors.append(f"{flow.name} finish raised:\n{traceback.format_exc()}")
        self.outbox = self.drain_outbox()
        self.log("settled; checking the stores")
        assert self.haproxy is not None
        checker.attach_haproxy_log(self.recorder, self.haproxy.log_path)
        results = {}
        for flow in self.flows:
            try:
                results[flow.name] = flow.check()
            except Exception:
                self.errors.append(f"{flow.name} check raised:\n{traceback.format_exc()}")
        self.log("checks done; scaling everything in")
        self.platform.shutdown()
        verdict = checker.verdict(self, results)
        verdict["cpu"] = self.cpu
        if self.netfaults:
            verdict["network_faults"] = self.netfaults.summary(verdict)
        report.write(self, verdict)
        return 0 if not verdict["violations"] else 1

    def cleanup(self) -> None:
        with contextlib.suppress(Exception):
            if self.platform:
                self.platform.stop_event.set()
                for instance in list(self.platform.instances.values()) + list(self.platform.draining.values()):
                    instance.resume()
                    instance.kill()
                for worker in list(self.platform.workers.values()):
                    worker.kill()
        stops: list[Callable[[], None]] = []
        if self.network:
            stops.append(self.network.remove)
        for started in (self.haproxy, self.bigquery, self.redis):
            if started:
                stops.append(started.stop)
        if self.postgres:
            stops.append(self.postgres.stop if self.args.keep_data else self.postgres.remove)
        for stop in stops:
            with contextlib.suppress(Exception):
                stop()


def _shift(schedule: Schedule, offset: float) -> Schedule:
    schedule.levels = [(t + offset, n) for t, n in schedule.levels]
    for name in (
        "web_kills",
        "worker_kills",
        "pauses",
        "redis_restarts",
        "postgres_restarts",
        "postgres_failovers",
        "redis_failovers",
    ):
        setattr(schedule, name, [t + offset for t in getattr(schedule, name)])
    return schedule


def _issue_token(username: str) -> str:
    """`manage.py issue_token USERNAME` prints the token (the last word it prints)."""
    import io

    from django.core.management import call_command

    out = io.StringIO()
    call_command("issue_token", username, stdout=out)
    words = out.getvalue().split()
    return words[-1]


def _stop_stale_clusters(reports: Path) -> None:
    """A run that crashed may have left its PostgreSQL running: stop it and drop its data."""
    pidfiles = [
        *reports.glob("chaos-*/pg*/data/postmaster.pid"),
        *Path(tempfile.gettempdir()).glob("omk-chaos-pg-*/data/postmaster.pid"),
    ]
    for pidfile in pidfiles:
        datadir = pidfile.parent
        owner = datadir.parent / "harness.pid"
        with contextlib.suppress(Exception):
            if owner.exists() and pid_alive(int(owner.read_text())):
                continue  # another run, still going
        with contextlib.suppress(Exception):
            pid = int(pidfile.read_text().split()[0])
            os.kill(pid, signal.SIGQUIT)
            wait_until(lambda p=pid: not pid_alive(p), timeout=10)
        shutil.rmtree(datadir, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    run = Run(args)
    # SIGTERM (a CI timeout) cleans up like Ctrl-C: no orphaned servers.
    signal.signal(signal.SIGTERM, lambda *_: (_ for _ in ()).throw(KeyboardInterrupt()))
    try:
        return run.execute()
    except KeyboardInterrupt:
        run.log("interrupted")
        return 130
    except Exception:
        traceback.print_exc()
        (run.report_dir / "error.txt").write_text(traceback.format_exc())
        return 2
    finally:
        run.cleanup()


def dump(data: Any) -> str:
    return json.dumps(data, indent=2, default=str)

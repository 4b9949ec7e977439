"""The processes of a chaos run, all real and all on this machine.

Each piece is owned by the harness (its own Redis server, its own PostgreSQL cluster, its own
HAProxy), so restarting or killing one disturbs nothing outside the run.
"""

from __future__ import annotations

import contextlib
import csv
import io
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

from chaos.cpu import parent_pid
from chaos.ports import free_port

if TYPE_CHECKING:
    from chaos.netns import Namespace

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


def pid_alive(pid: int) -> bool:
    """A process with this pid runs: it exists (signal 0 checks without sending anything) and has
    not exited unreaped (a zombie, which an orphan stays if nothing reaps it)."""
    try:
        os.kill(pid, 0)
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (ProcessLookupError, FileNotFoundError):
        return False
    return state != "Z"


def wait_until(predicate, timeout: float, interval: float = 0.1) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if predicate():
                return True
        time.sleep(interval)
    return False


def _exists(pid: int) -> bool:
    """The pid is taken, by a zombie too: PostgreSQL's start refuses a data directory whose
    postmaster.pid names a pid that exists."""
    return Path(f"/proc/{pid}").exists()


def _kill_group(process: subprocess.Popen | None, signum: int) -> None:
    if process is not None and process.poll() is None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(process.pid, signum)


def _stop_group(process: subprocess.Popen | None) -> None:
    """SIGTERM, five seconds, then SIGKILL."""
    _kill_group(process, signal.SIGTERM)
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5)
        _kill_group(process, signal.SIGKILL)


class RedisServer:
    """A Redis with persistence as production would run it: every write in the AOF before the reply.

    `persistent=False` for a throwaway server (tests); `extra_args` adds configuration, e.g.
    `["--replicaof", "127.0.0.1", "6380"]` for a replica.
    """

    def __init__(
        self, directory: Path, port: int | None = None, *, persistent: bool = True, extra_args: list[str] | None = None
    ):
        self.dir = directory
        self.port = port or free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.persistent = persistent
        self.extra_args = list(extra_args or [])
        self.process: subprocess.Popen | None = None

    def command_line(self) -> list[str]:
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        return [
            shutil.which("redis-server") or "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--dir", str(self.dir),
            *persistence,
            "--save", "",
            "--logfile", str(self.dir / "redis.log"),
            *self.extra_args,
        ]  # fmt: skip

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        log = (self.dir / "redis.out").open("ab")
        self.process = subprocess.Popen(
            self.command_line(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        if not wait_until(self.answers, 15):
            raise RuntimeError(f"Redis did not start on port {self.port}; see {self.dir / 'redis.log'}")

    def answers(self) -> bool:
        """Any reply, PONG or an error (a replica without its primary answers MASTERDOWN)."""
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16)[:1] in (b"+", b"-")

    def ping(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    def crash(self) -> None:
        """SIGKILL: what survives is what the AOF had (appendfsync always: every acknowledged write)."""
        _kill_group(self.process, signal.SIGKILL)
        if self.process is not None:
            self.process.wait(timeout=10)

    def restart(self) -> None:
        self.crash()
        self.start()

    def stop(self) -> None:
        _kill_group(self.process, signal.SIGTERM)
        if self.process is not None:
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.crash()


class RedisSentinel:
    """A Redis Sentinel (Debian's `redis-sentinel`) watching one primary under `master_name`.

    Quorum 2 of 3 in the harness and the tests; `down_after_ms` is how long the primary may be
    silent before this Sentinel calls it down. The Sentinel rewrites its file as it learns.
    """

    def __init__(
        self,
        directory: Path,
        *,
        master_name: str,
        master_port: int,
        port: int | None = None,
        quorum: int = 2,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 10000,
    ):
        self.dir = directory
        self.port = port or free_port()
        self.master_name = master_name
        self.master_port = master_port
        self.quorum = quorum
        self.down_after_ms = down_after_ms
        self.failover_timeout_ms = failover_timeout_ms
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        config = self.dir / "sentinel.conf"
        if not config.exists():
            name = self.master_name
            config.write_text(
                f"port {self.port}\nbind 127.0.0.1\ndir {self.dir}\nlogfile {self.dir / 'sentinel.log'}\n"
                f"sentinel monitor {name} 127.0.0.1 {self.master_port} {self.quorum}\n"
                f"sentinel down-after-milliseconds {name} {self.down_after_ms}\n"
                f"sentinel failover-timeout {name} {self.failover_timeout_ms}\n"
                f"sentinel parallel-syncs {name} 1\n"
            )
        binary = shutil.which("redis-sentinel")
        command = (
            [binary, str(config)]
            if binary
            else [shutil.which("redis-server") or "redis-server", str(config), "--sentinel"]
        )
        self.process = subprocess.Popen(
            command, stdout=(self.dir / "sentinel.out").open("ab"), stderr=subprocess.STDOUT, start_new_session=True
        )
        if not wait_until(self.answers, 15):
            raise RuntimeError(f"Sentinel did not start on port {self.port}; see {self.dir / 'sentinel.log'}")

    def answers(self) -> bool:
        with socket.create_connection(("127.0.0.1", self.port), timeout=0.5) as sock:
            sock.sendall(b"PING\r\n")
            return sock.recv(16).startswith(b"+PONG")

    def master(self) -> dict:
        """This Sentinel's view of the primary (SENTINEL MASTER <name>)."""
        import redis

        view = redis.Redis(port=self.port, socket_timeout=1).sentinel_master(self.master_name)
        assert isinstance(view, dict), view
        return view

    def stop(self) -> None:
        _stop_group(self.process)


class RedisGroup:
    """A Redis primary, its replica and three Sentinels, as Memorystore's Standard tier or a
    self-run Redis HA keeps them; the Sentinels promote the replica when the primary dies.

    `primary` and `replica` name the servers as started; after a failover the Sentinels' view
    (`primary_port`, `current_primary`) says which is which. `down_after_ms` (how long a silent
    primary is given) and `failover_timeout_ms` set how fast the Sentinels act: with 1000 ms the
    replica is promoted about 2 to 3 s after the primary died (measured by the chaos run's
    redis_failover fault; see docs/reliability.md). A failover-timeout of 3 s (Redis's default:
    3 minutes) bounds an election that failed (a split vote): the Sentinels try again after twice
    that, still within a run's budget.
    """

    def __init__(
        self,
        directory: Path,
        *,
        master_name: str = "omk",
        persistent: bool = True,
        down_after_ms: int = 1000,
        failover_timeout_ms: int = 3000,
    ):
        self.dir = directory
        self.master_name = master_name
        self.down_after_ms = down_after_ms
        sync = ["--repl-diskless-sync-delay", "0"]
        self.primary = RedisServer(directory / "redis-a", persistent=persistent, extra_args=sync)
        self.replica = RedisServer(
            directory / "redis-b",
            persistent=persistent,
            extra_args=[*sync, "--replicaof", "127.0.0.1", str(self.primary.port)],
        )
        self.sentinels = [
            RedisSentinel(
                directory / f"sentinel-{i}",
                master_name=master_name,
                master_port=self.primary.port,
                down_after_ms=down_after_ms,
                failover_timeout_ms=failover_timeout_ms,
            )
            for i in range(3)
        ]

    @property
    def port(self) -> int:
        return self.primary.port

    def current_primary(self) -> RedisServer:
        """The server the Sentinels call primary (the one started as primary while they disagree)."""
        port = self.primary_port()
        return self.by_port(port) if port is not None else self.primary

    def _restart_as(self, server: RedisServer, primary: RedisServer | None) -> None:
        """Start `server` again (its AOF replayed) as the primary, or as a replica of `primary`.

        Its command line is rewritten: a server started as a replica of the one that has since
        died must come back as the primary it was promoted to, and the old primary must come
        back as a replica (never as a second primary with its stale data).
        """
        args = list(server.extra_args)
        if "--replicaof" in args:
            at = args.index("--replicaof")
            del args[at : at + 3]
        if primary is not None:
            args += ["--replicaof", "127.0.0.1", str(primary.port)]
        server.extra_args = args
        server.crash()
        server.start()

    def restart(self) -> None:
        """The primary crashes and starts again in place (a restart shorter than the Sentinels'
        down-after time: no failover), its replica resynchronising from it."""
        self._restart_as(self.current_primary(), None)

    def other(self, server: RedisServer) -> RedisServer:
        return self.replica if server is self.primary else self.primary

    def kill_primary(self) -> tuple[RedisServer, RedisServer]:
        """SIGKILL of the primary; returns (dead primary, its replica, about to be promoted)."""
        dead = self.current_primary()
        dead.crash()
        return dead, self.other(dead)

    def promoted(self, server: RedisServer) -> bool:
        """Every Sentinel calls `server` the primary and `server` says it is one."""
        return self.primary_port() == server.port and self.server(server.port).info("replication")["role"] == "master"

    def rejoin(self, dead: RedisServer, primary: RedisServer) -> None:
        """The dead primary starts again as a replica of the promoted one."""
        self._restart_as(dead, primary)

    def in_sync(self) -> bool:
        info = self.server(self.current_primary().port).info("replication")
        return info.get("role") == "master" and any(
            isinstance(value, dict) and value.get("state") == "online"
            for key, value in info.items()
            if key.startswith("slave")
        )

    @property
    def addresses(self) -> list[tuple[str, int]]:
        return [("127.0.0.1", sentinel.port) for sentinel in self.sentinels]

    def start(self) -> None:
        self.primary.start()
        self.replica.start()
        for sentinel in self.sentinels:
            sentinel.start()
        if not wait_until(self.settled, 30, interval=0.2):
            raise RuntimeError(f"Redis group did not settle; see {self.dir}")

    def settled(self) -> bool:
        """Every Sentinel agrees on a primary, sees the other two and a replica in sync."""
        views = [sentinel.master() for sentinel in self.sentinels]
        ports = {view["port"] for view in views}
        return (
            len(ports) == 1
            and all(view["num-other-sentinels"] == 2 and view["num-slaves"] >= 1 for view in views)
            and self.server(ports.pop()).info("replication").get("connected_slaves", 0) >= 1
        )

    def primary_port(self) -> int | None:
        """The primary's port as the Sentinels say it (None while they disagree)."""
        ports = {sentinel.master()["port"] for sentinel in self.sentinels}
        return ports.pop() if len(ports) == 1 else None

    def server(self, port: int):
        import redis

        return redis.Redis(port=port, socket_timeout=1)

    def by_port(self, port: int) -> RedisServer:
        return self.primary if self.primary.port == port else self.replica

    def stop(self) -> None:
        for sentinel in self.sentinels:
            sentinel.stop()
        for server in (self.primary, self.replica):
            server.stop()


class PostgresCluster:
    """A PostgreSQL cluster of the run's own (initdb + pg_ctl), so its restart touches no one else.

    The machine's PostgreSQL on 5432 is shared by every test run: restarting it would break them.
    """

    def __init__(self, directory: Path, port: int | None = None):
        self.dir = directory
        self.datadir = directory / "data"
        self.port = port or free_port()
        self._as_postgres = os.geteuid() == 0  # PostgreSQL refuses to run as root
        self._crashed: list[int] = []

    def url(self, dbname: str) -> str:
        return f"postgres://postgres@127.0.0.1:{self.port}/{dbname}"

    def _run(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
        cmd = list(args)
        if self._as_postgres:
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)

    def _tool(self, name: str) -> str:
        found = shutil.which(name)
        if found:
            return found
        versions = sorted(Path("/usr/lib/postgresql").glob("*/bin/" + name))
        if not versions:
            raise RuntimeError(f"{name} not found (PostgreSQL server binaries are needed)")
        return str(versions[-1])

    def _prepare_dir(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self._as_postgres and not self._reachable_by_postgres(self.dir.parent):
            # e.g. pytest's 0700 tmp_path: the cluster goes to /tmp, a link keeps it findable.
            moved = Path(tempfile.mkdtemp(prefix="omk-chaos-pg-"))
            moved.chmod(0o755)
            shutil.rmtree(self.dir)
            self.dir.symlink_to(moved)
            self.dir = moved
            self.datadir = moved / "data"
        (self.dir / "harness.pid").write_text(str(os.getpid()))
        if self._as_postgres:
            shutil.chown(self.dir, "postgres", "postgres")

    def init(self) -> None:
        self._prepare_dir()
        result = self._run(
            self._tool("initdb"), "-D", str(self.datadir), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync"
        )
        if result.returncode != 0:
            raise RuntimeError(f"initdb failed: {result.stderr or result.stdout}")

    @staticmethod
    def _reachable_by_postgres(path: Path) -> bool:
        check = ["runuser", "-u", "postgres", "--", "test", "-w", str(path), "-o", "-x", str(path)]
        return subprocess.run(check, capture_output=True, check=False).returncode == 0

    def start(self, **settings: str) -> None:
        """Start the server; `settings` are extra `-c name=value` (e.g. hot_standby="off")."""
        options = (
            f"-p {self.port} -c listen_addresses=127.0.0.1 -c unix_socket_directories={self.dir}"
            " -c max_connections=300 -c shared_buffers=64MB"
        ) + "".join(f" -c {name}={value}" for name, value in settings.items())
        result = self._run(
            self._tool("pg_ctl"), "-D", str(self.datadir), "-l", str(self.dir / "postgres.log"),
            "-o", options, "-w", "-t", "60", "start",
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl start failed: {result.stderr or result.stdout}")

    def init_standby(self, primary: PostgresCluster) -> None:
        """Make this cluster a streaming standby of `primary` (pg_basebackup -R): started, it
        replays the primary's WAL and answers reads, refusing writes (read_only_sql_transaction)."""
        self._prepare_dir()
        result = self._run(
            self._tool("pg_basebackup"), "-h", "127.0.0.1", "-p", str(primary.port), "-U", "postgres",
            "-D", str(self.datadir), "-R", "-X", "stream", "--no-sync", "-c", "fast",
        )  # fmt: skip
        if result.returncode != 0:
            raise RuntimeError(f"pg_basebackup failed: {result.stderr or result.stdout}")

    def promote(self) -> None:
        result = self._run(self._tool("pg_ctl"), "-D", str(self.datadir), "-w", "-t", "60", "promote")
        if result.returncode != 0:
            raise RuntimeError(f"pg_ctl promote failed: {result.stderr or result.stdout}")

    def stop(self, mode: str = "fast") -> None:
        self._run(self._tool("pg_ctl"), "-D", str(self.datadir), "-m", mode, "-w", "-t", "60", "stop")

    # How long an immediate stop may take before its processes are SIGKILLed: PostgreSQL's own
    # escalation (SIGQUIT, then SIGKILL to what is left after 5 s) waits for every child.
    CRASH_SECONDS = 2.0

    def crash(self) -> None:
        """The server dies: an immediate stop, and SIGKILL of the postmaster and every child still
        there after CRASH_SECONDS. Returns once the postmaster is gone (its port closed).

        In a chaos run an immediate stop took 60 s, past pg_ctl's wait, so the standby was never
        promoted: the server's log shows its own SIGKILL of the children after 5 s and its exit
        55 s later, so a child outlived SIGKILL (stuck in the kernel; why, the log does not say).
        The postmaster waits for its children; a dead host does not."""
        pids = self._pids()
        self._run(
            self._tool("pg_ctl"), "-D", str(self.datadir), "-m", "immediate", "-w", "-t", str(int(self.CRASH_SECONDS)),
            "stop", timeout=self.CRASH_SECONDS + 10,
        )  # fmt: skip
        # Children outlive a dead postmaster (adopted by init): remembered for wait_stopped.
        self._crashed = sorted(set(pids) | set(self._pids()))
        for pid in self._crashed:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        if pids and not wait_until(lambda: not pid_alive(pids[0]), timeout=10, interval=0.05):
            raise RuntimeError(f"the postmaster {pids[0]} outlived SIGKILL")

    def wait_stopped(self, timeout: float = 120) -> None:
        """Until no process of the server is left, the last crash's included (a crashed node can be
        started, or rewound, only then: its children hold the shared memory)."""
        pids = sorted(set(self._pids()) | set(self._crashed))
        if not wait_until(lambda: not any(_exists(pid) for pid in pids), timeout=timeout, interval=0.1):
            raise RuntimeError(f"processes of the stopped server on {self.port} are still there: {pids}")
        self._crashed = []

    def _pids(self) -> list[int]:
        """The postmaster's pid (first) and its children's, while it runs; [] when it does not."""
        try:
            postmaster = int((self.datadir / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return []
        if not pid_alive(postmaster):
            return []
        children = [int(pid) for pid in os.listdir("/proc") if pid.isdigit() and parent_pid(pid) == postmaster]
        return [postmaster, *children]

    def restart(self) -> None:
        """An immediate stop is a crash for PostgreSQL: the next start replays the WAL."""
        self.restart_with({})

    def restart_with(self, settings: Mapping[str, str]) -> None:
        self.crash()
        self.wait_stopped()
        self.start(**settings)

    def create_database(self, name: str) -> None:
        import psycopg
        from psycopg import sql

        with psycopg.connect(self.url("postgres"), autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))

    def remove(self) -> None:
        self.stop(mode="immediate")
        shutil.rmtree(self.datadir, ignore_errors=True)
        if self.dir.name.startswith("omk-chaos-pg-"):
            shutil.rmtree(self.dir, ignore_errors=True)


class PostgresPair:
    """A primary and its streaming standby with synchronous replication, as Cloud SQL HA keeps
    them, and their failover. The service reaches it through libpq's multi-host URL (`url()`):
    every new connection goes to whichever node accepts writes.

    Synchronous (`synchronous_standby_names = '*'`, `synchronous_commit = on`): a commit returns
    only once the standby has flushed its WAL, so a promoted standby has every acknowledged
    commit. While a node is rebuilt after a failover the new primary runs alone (the setting
    empty), as Cloud SQL does until its new standby is up: writes are never held by a missing
    standby. Each node carries everything a cluster needs of the other (wal_log_hints for
    pg_rewind, replication slots not used: wal_keep_size covers a rewind's catch-up).
    """

    SETTINGS = {
        "wal_log_hints": "on",
        "wal_keep_size": "256MB",
        "hot_standby": "on",
        # A standby that lost its primary (a restart) asks again after this, not 5 s: commits
        # wait for it while replication is synchronous.
        "wal_retrieve_retry_interval": "250ms",
    }

    def __init__(self, directory: Path):
        self.dir = directory
        self.nodes = [PostgresCluster(directory / "pg"), PostgresCluster(directory / "pg-b")]
        self.primary, self.standby = self.nodes

    @property
    def port(self) -> int:
        return self.primary.port

    def url(self, dbname: str) -> str:
        # Fixed order: after a failover the first host listed is a standby, so the service's
        # connections do meet (and skip) a node that refuses writes.
        hosts = ",".join(f"127.0.0.1:{node.port}" for node in self.nodes)
        return f"postgres://postgres@{hosts}/{dbname}?target_session_attrs=read-write"

    def _settings(self, node: PostgresCluster) -> dict[str, str]:
        return {"cluster_name": node.dir.name}

    def start(self) -> None:
        self.primary.init()
        # In the configuration file, not on the command line: pg_rewind's own crash recovery of
        # a node stopped with `immediate` runs without the command line, and a wal_log_hints off
        # there would make that node's rewind impossible. pg_basebackup copies the file.
        with (self.primary.datadir / "postgresql.conf").open("a") as conf:
            conf.writelines(f"{name} = '{value}'\n" for name, value in self.SETTINGS.items())
        self.primary.start(**self._settings(self.primary))
        self.standby.init_standby(self.primary)
        self.standby.start(**self._settings(self.standby))
        self._synchronous(self.primary, True)

    def _synchronous(self, primary: PostgresCluster, on: bool, timeout: float = 30) -> None:
        """Turn synchronous replication on (waiting until the standby streams) or off, on `primary`."""
        value = "'*'" if on else "''"
        self._execute(primary, f"ALTER SYSTEM SET synchronous_standby_names = {value}", "SELECT pg_reload_conf()")
        if on and not wait_until(lambda: self.sync_state(primary) == "sync", timeout, interval=0.1):
            raise RuntimeError(f"standby of {primary.dir.name} did not become synchronous; see {self.dir}")

    def _execute(self, node: PostgresCluster, *statements: str) -> None:
        import psycopg

        with psycopg.connect(node.url("postgres"), autocommit=True, connect_timeout=3) as conn:
            for statement in statements:
                conn.execute(statement)

    def sync_state(self, primary: PostgresCluster) -> str | None:
        """pg_stat_replication's sync_state of the (one) standby streaming from `primary`."""
        import psycopg

        with psycopg.connect(primary.url("postgres"), autocommit=True, connect_timeout=1) as conn:
            row = conn.execute("SELECT sync_state FROM pg_stat_replication LIMIT 1").fetchone()
        return row[0] if row else None

    def create_database(self, name: str) -> None:
        self.primary.create_database(name)

    def fail_over(self, on_step: Callable[[str], None] | None = None, *, rebuild: bool = True) -> dict[str, Any]:
        """The primary stopped with `immediate` (a crash), the standby promoted, the old primary
        rebuilt as the new standby (pg_rewind, a fresh pg_basebackup if that fails), then
        replication synchronous again. Returns each step's seconds since the stop.

        `rebuild=False` leaves the old primary stopped (a test's last failover: nothing follows)."""
        step = on_step or (lambda name: None)
        old, new = self.primary, self.standby
        started = time.monotonic()
        times: dict[str, Any] = {}

        def mark(name: str) -> None:
            times[name] = round(time.monotonic() - started, 3)
            step(name)

        old.crash()
        mark("primary_stopped")
        new.promote()
        # Alone until its standby is back: commits must not wait for a standby that is not there.
        self._synchronous(new, False)
        self.primary, self.standby = new, old
        mark("standby_promoted")
        if not rebuild:
            return times
        times["rebuilt_by"] = self._rebuild(old, new)
        mark("rebuilt_as_standby")
        return times

    def _rebuild(self, old: PostgresCluster, new: PostgresCluster) -> str:
        """pg_rewind the old primary onto the new one's timeline and start it as its standby;
        a fresh pg_basebackup when the rewind fails or the node does not stream after it."""
        old.wait_stopped()
        # pg_rewind reads the source's timeline from its control file, which the promotion
        # updates only at its checkpoint: without this one it may see no fork ("no rewind required").
        self._execute(new, "CHECKPOINT")
        conninfo = f"host=127.0.0.1 port={new.port} user=postgres dbname=postgres"
        rewind = old._run(
            old._tool("pg_rewind"), "-D", str(old.datadir), "--source-server", conninfo, "-R", "--no-sync",
            timeout=120,
        )  # fmt: skip
        with (self.dir / "pg_rewind.log").open("a") as log:
            log.write(rewind.stdout + rewind.stderr)
        if rewind.returncode == 0:
            old.start(**self._settings(old))
            with contextlib.suppress(RuntimeError):
                self._synchronous(new, True, timeout=15)
                return "pg_rewind"
            old.stop(mode="immediate")
        shutil.rmtree(old.datadir, ignore_errors=True)
        old.init_standby(new)
        old.start(**self._settings(old))
        self._synchronous(new, True)
        return "pg_basebackup"

    def restart(self) -> None:
        """The primary crashes and comes back (no failover): its standby reconnects."""
        self.primary.restart_with(self._settings(self.primary))

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()

    def remove(self) -> None:
        for node in self.nodes:
            node.remove()


class HAProxy:
    """HAProxy in front of a fixed set of server slots, changed at runtime over its stats socket.

    Slots start in maintenance; an instance that passed its own readiness is put in a slot and
    the slot set `ready`, from then on HAProxy's health checks of `/ready` decide (as a
    Kubernetes readiness probe would). Each request's outcome is logged with the id the client
    sent, so the checker knows which instance served (or failed) each attempt.
    """

    BACKEND = "web"

    def __init__(
        self, directory: Path, slot_ports: list[int], port: int | None = None, slot_hosts: list[str] | None = None
    ):
        self.dir = directory
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.slot_ports = slot_ports
        # Each slot's address: 127.0.0.1, or the network namespace of the slot (chaos/netns.py).
        self.slot_hosts = slot_hosts or ["127.0.0.1"] * len(slot_ports)
        # A Unix socket's path has a short limit (HAProxy takes 97 bytes at most), which a report
        # directory under pytest's tmp_path can pass: the socket gets a short directory of its own.
        self.socket_dir = Path(tempfile.mkdtemp(prefix="omk-haproxy-"))
        self.socket_path = self.socket_dir / "haproxy.sock"
        self.config_path = directory / "haproxy.cfg"
        self.log_path = directory / "haproxy.log"
        self.process: subprocess.Popen | None = None

    def config(self) -> str:
        servers = "\n".join(
            f"    server s{i} {host}:{port} disabled"
            for i, (host, port) in enumerate(zip(self.slot_hosts, self.slot_ports, strict=True))
        )
        return f"""# Generated by chaos/topology.py for one chaos run.
global
    log stdout format raw local0
    stats socket {self.socket_path} mode 600 level admin
    maxconn 4000

defaults
    mode http
    log global
    # id the client sent | server | status | termination state | retries | total ms
    log-format "%[capture.req.hdr(0)] %s %ST %tsc %rc %Ta %{{+Q}}r"
    timeout connect 1s
    timeout client 60s
    # The longest a request may take behind the load balancer: beyond every bound of the service's
    # own (a dependency wait is cut in ~10 s, see docs/configuration.md), so only a request sent to
    # an instance whose path drops packets meets it (504, and the client retries). The clients'
    # long polls for the Queen's replies wait 5 s (chaos/flows/hive.py).
    timeout server 15s
    timeout check 2s
    timeout http-keep-alive 5s
    # A connection refused by an instance that died is retried on another one (safe: the request
    # never reached the application). Nothing else is retried here: the client owns that.
    retries 3
    option redispatch 1

frontend api
    bind 127.0.0.1:{self.port}
    http-request capture req.hdr(X-Chaos-Id) len 64
    default_backend {self.BACKEND}

backend {self.BACKEND}
    balance roundrobin
    option httpchk GET /ready
    http-check expect status 200
    default-server check inter 500ms fastinter 250ms downinter 500ms fall 2 rise 1
{servers}
"""

    def start(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.config())
        binary = shutil.which("haproxy") or "/usr/sbin/haproxy"
        check = subprocess.run([binary, "-c", "-f", str(self.config_path)], capture_output=True, text=True)
        if check.returncode != 0:
            raise RuntimeError(f"HAProxy config invalid:\n{check.stdout}{check.stderr}")
        self.process = subprocess.Popen(
            [binary, "-db", "-f", str(self.config_path)],
            stdout=self.log_path.open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        if not wait_until(lambda: self.command("show info") != "", 10):
            raise RuntimeError("HAProxy did not open its stats socket")

    def command(self, line: str) -> str:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(3)
            sock.connect(str(self.socket_path))
            sock.sendall(line.encode() + b"\n")
            chunks = []
            while chunk := sock.recv(65536):
                chunks.append(chunk)
        return b"".join(chunks).decode(errors="replace")

    def set_state(self, slot: int, state: str) -> None:
        """state: ready (health checks decide), drain, maint."""
        self.command(f"set server {self.BACKEND}/s{slot} state {state}")

    def server_status(self) -> dict[int, str]:
        """Slot -> HAProxy's status of it (UP, DOWN, MAINT, ...)."""
        text = self.command("show stat")
        rows = csv.DictReader(io.StringIO(text.lstrip("# ")))
        status = {}
        for row in rows:
            if row.get("pxname") == self.BACKEND and (row.get("svname") or "").startswith("s"):
                status[int(row["svname"][1:])] = row.get("status", "")
        return status

    def stop(self) -> None:
        _stop_group(self.process)
        shutil.rmtree(self.socket_dir, ignore_errors=True)


class WebInstance:
    """One gunicorn master and its workers on a port of its own, as a pod or a Cloud Run instance."""

    def __init__(
        self,
        name: str,
        slot: int,
        port: int,
        env: Mapping[str, str],
        directory: Path,
        namespace: Namespace | None = None,
    ):
        self.name = name
        self.slot = slot
        self.port = port
        # In a network namespace (chaos/netns.py): reached on its address, its dependencies
        # through the namespace's proxy routes.
        self.namespace = namespace
        self.url = f"http://{namespace.address if namespace else '127.0.0.1'}:{port}"
        self.dir = directory
        self.run_dir = directory / "run"
        inherited = {k: v for k, v in os.environ.items() if k != "OMK_DRAIN_FLAG"}
        if namespace is not None:
            env = {key: namespace.rewrite(value) for key, value in env.items()}
        self.env = {
            **inherited,
            **env,
            "PORT": str(port),
            "OMK_RUN_DIR": str(self.run_dir),
            "PROMETHEUS_MULTIPROC_DIR": str(directory / "prometheus"),
        }
        self.process: subprocess.Popen | None = None
        self.started_at: float | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    def start(self) -> None:
        self.run_dir.mkdir(parents=True, exist_ok=True)
        (self.dir / "prometheus").mkdir(parents=True, exist_ok=True)
        argv = [str(BIN / "gunicorn"), "-c", "omk/gunicorn.conf.py"]
        self.process = subprocess.Popen(
            self.namespace.wrap(argv) if self.namespace else argv,
            cwd=ROOT,
            env=self.env,
            stdout=(self.dir / "gunicorn.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        self.started_at = time.monotonic()

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def ready(self) -> bool:
        return requests.get(self.url + "/ready", timeout=2).status_code == 200

    def mark_draining(self) -> None:
        """What a preStop hook does: readiness turns 503 at once (the drain flag of the foundation).

        `manage.py drain`, when present, does the same through the same flag; touching it here
        costs no Django start-up on a busy machine.
        """
        flag = self.run_dir / f"gunicorn-{self.pid}.draining"
        flag.parent.mkdir(parents=True, exist_ok=True)
        flag.touch()

    def run_manage(self, args: list[str], timeout: float) -> int | None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return subprocess.run(
                [sys.executable, "manage.py", *args],
                cwd=ROOT,
                env=self.env,
                stdout=(self.dir / "manage.log").open("ab"),
                stderr=subprocess.STDOUT,
                timeout=timeout,
                check=False,
            ).returncode
        return None

    def terminate(self) -> None:
        if self.alive():
            os.kill(self.pid, signal.SIGTERM)

    def kill(self) -> None:
        _kill_group(self.process, signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)

    def pause(self) -> None:
        _kill_group(self.process, signal.SIGSTOP)

    def resume(self) -> None:
        _kill_group(self.process, signal.SIGCONT)


class WorkerProcess:
    """`python manage.py worker`: the durable background worker, with the web instance's lifecycle."""

    def __init__(
        self, name: str, env: Mapping[str, str], directory: Path, command: list[str], namespace: Namespace | None = None
    ):
        self.name = name
        self.dir = directory
        self.namespace = namespace
        if namespace is not None:
            env = {key: namespace.rewrite(value) for key, value in env.items()}
        self.env = {**os.environ, **env, "OMK_RUN_DIR": str(directory / "run")}
        self.command = command
        self.kind = "worker"
        self.process: subprocess.Popen | None = None

    def start(self) -> None:
        (self.dir / "run").mkdir(parents=True, exist_ok=True)
        argv = [sys.executable, "manage.py", *self.command]
        self.process = subprocess.Popen(
            self.namespace.wrap(argv) if self.namespace else argv,
            cwd=ROOT,
            env=self.env,
            stdout=(self.dir / "worker.log").open("ab"),
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def kill(self) -> None:
        _kill_group(self.process, signal.SIGKILL)
        if self.process is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.process.wait(timeout=10)

    def stop(self, timeout: float) -> int | None:
        if self.process is None:
            return None
        if self.alive():
            os.kill(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.kill()
        return self.process.returncode

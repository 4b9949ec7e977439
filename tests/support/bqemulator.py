"""A real local BigQuery (the bqemulator package) for tests and benchmarks, on free ports."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import requests

from tests.support.instances import free_port

BQEMULATOR = Path(sys.executable).with_name("bqemulator")
# bqemulator emulates time travel by copying the whole table (CREATE TABLE AS SELECT *) after every
# write: DML, load job or stream commit. That copy makes every write cost time in proportion to the
# table's size, whatever the write is; real BigQuery keeps time travel without any such copy. The
# benchmark starts the emulator with this patch to measure what the export itself costs.
NO_TIME_TRAVEL = (
    "from bqemulator.versioning.snapshots import SnapshotManager; "
    "SnapshotManager.capture = lambda self, *args, **kwargs: None; "
    "from bqemulator.cli import main; main()"
)


def import_spatial_extension() -> None:
    """bqemulator loads DuckDB's spatial extension at start; offline it cannot download it, so
    install it once from the duckdb-extension-spatial wheel into DuckDB's extension directory."""
    import duckdb_extensions

    duckdb_extensions.import_extension("spatial")


class BigQueryEmulator:
    def __init__(
        self,
        data_dir: Path,
        *,
        project: str = "omk-local",
        rest_port: int = 0,
        grpc_port: int = 0,
        time_travel: bool = True,
        env: dict[str, str] | None = None,
    ):
        self.data_dir = data_dir
        self.project = project
        self.rest_port = rest_port or free_port()
        self.grpc_port = grpc_port or free_port()
        self.url = f"http://127.0.0.1:{self.rest_port}"
        # The Storage Write API (gRPC), as OUTBOX_BIGQUERY_EMULATOR_GRPC wants it.
        self.grpc_address = f"127.0.0.1:{self.grpc_port}"
        self.time_travel = time_travel
        # BQEMU_* settings of the emulator (its limits, for instance).
        self.env = env or {}
        self.process: subprocess.Popen | None = None

    def start(self, timeout: float = 60.0) -> BigQueryEmulator:
        import_spatial_extension()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        log = (self.data_dir / "bqemulator.log").open("ab")
        command = [str(BQEMULATOR)] if self.time_travel else [sys.executable, "-c", NO_TIME_TRAVEL]
        self.process = subprocess.Popen(
            [
                *command,
                "start",
                "--persistent",
                "--data-dir",
                str(self.data_dir),
                "--project",
                self.project,
                "--rest-port",
                str(self.rest_port),
                "--grpc-port",
                str(self.grpc_port),
                "--log-level",
                "warning",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            env={**os.environ, **self.env},
        )
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"bqemulator exited with {self.process.returncode}: see {log.name}")
            with contextlib.suppress(requests.RequestException):
                requests.get(f"{self.url}/bigquery/v2/projects/{self.project}/datasets", timeout=1)
                return self
            time.sleep(0.2)
        self.stop()
        raise RuntimeError(f"bqemulator did not answer on {self.url} within {timeout} s")

    def stop(self) -> None:
        if self.process is None or self.process.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(timeout=10)

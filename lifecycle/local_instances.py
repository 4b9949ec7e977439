"""The instances running on this host, found through their files in OMK_RUN_DIR."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

from lifecycle.shutdown import run_dir


@dataclasses.dataclass(frozen=True)
class LocalInstance:
    pid: int
    instance_id: str
    kind: str  # "web" or "worker"
    file_kind: str  # "gunicorn" or "worker"
    path: Path

    @property
    def report_path(self) -> Path:
        return self.path.with_name(f"{self.file_kind}-{self.pid}.report.json")

    @property
    def drain_flag(self) -> Path:
        return self.path.with_name(f"gunicorn-{self.pid}.draining")


def process_alive(pid: int) -> bool:
    """True while the process runs (a zombie waiting for its parent counts as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return stat.rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def local_instances(directory: Path | None = None) -> list[LocalInstance]:
    """The instances with a file in `directory` (the run directory of Django's settings) whose
    process runs."""
    found = []
    for path in sorted((directory or run_dir()).glob("*.json")):
        if path.name.endswith(".report.json"):
            continue
        try:
            data = json.loads(path.read_text())
            pid = int(data["pid"])
        except (OSError, ValueError, KeyError):
            continue
        if not process_alive(pid):
            # Left by a process that was killed: not an instance any more.
            continue
        file_kind = path.name.split("-", 1)[0]
        found.append(LocalInstance(pid, data.get("instance_id", ""), data.get("kind", "web"), file_kind, path))
    return found


# Where `make run` records the BigQuery emulator it started (scripts/bqemulator.sh), so that
# `manage.py stop` stops it with the instances; one started otherwise is never recorded here.
BQEMULATOR_RECORD = "bqemulator.pid"


def local_bqemulator() -> int | None:
    """The pid of the BigQuery emulator `make run` started on this host, if it still runs."""
    path = run_dir() / BQEMULATOR_RECORD
    try:
        pid = int(path.read_text().strip())
        # A recycled pid is another program's: only a process running bqemulator counts.
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        path.unlink(missing_ok=True)
        return None
    if b"bqemulator" not in cmdline or not process_alive(pid):
        path.unlink(missing_ok=True)
        return None
    return pid

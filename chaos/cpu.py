"""Where a run's CPU goes: its processes' CPU seconds by kind, read from /proc once a second.

The run's processes are the harness's descendants and the PostgreSQL servers (pg_ctl detaches
them; their command lines name the report directory) with theirs. A process's seconds are its own
(utime + stime), counted from the first sample to its last: one that lived under a second may be
missed, one that died counts up to its last sample. The machine's busy seconds over the same
interval (/proc/stat) say how much went to anything else (another session's tests).
"""

from __future__ import annotations

import os
import threading
from collections import defaultdict
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")

KINDS = (
    ("chaos.netproxy", "dependency proxy (chaos/netproxy.py)"),
    ("gunicorn", "web instances (gunicorn)"),
    ("manage.py worker", "job worker"),
    ("outbox_export", "outbox exporter"),
    ("manage.py drain", "preStop (manage.py drain)"),
    ("manage.py", "manage.py (set-up)"),
    ("bqemulator", "BigQuery emulator"),
    ("haproxy", "HAProxy"),
    ("sentinel", "Redis Sentinels"),
    ("redis-server", "Redis"),
    ("postgres", "PostgreSQL"),
    ("pg_", "PostgreSQL"),
    ("iptables", "ip / iptables"),
    ("ip ", "ip / iptables"),
)


def process_stat(pid: str) -> tuple[int, float] | None:
    """(ppid, CPU seconds) of a process, None when it is gone."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    fields = text[text.rindex(")") + 2 :].split()
    return int(fields[1]), (int(fields[11]) + int(fields[12])) / TICK


def parent_pid(pid: str) -> int | None:
    stat = process_stat(pid)
    return stat[0] if stat else None


def _cmdline(pid: str) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def machine_busy() -> float:
    """Busy CPU seconds of the whole machine since boot (every core, idle and iowait excluded)."""
    values = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return (sum(values[:8]) - values[3] - values[4]) / TICK


class CpuSampler:
    def __init__(self, markers: list[str], interval: float = 1.0):
        self.root = os.getpid()
        self.markers = markers  # strings in the command lines of the run's detached servers
        self.interval = interval
        self._started = False
        self._examined: set[str] = set()
        self.first: dict[str, float] = {}
        self.last: dict[str, float] = {}
        self.kind: dict[str, str] = {}
        self.busy: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, name="cpu-sampler", daemon=True)

    def start(self) -> CpuSampler:
        self.sample()
        self._thread.start()
        return self

    def stop(self) -> dict[str, object]:
        self._stop.set()
        self._thread.join(timeout=10)
        self.sample()
        return self.summary()

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def sample(self) -> None:
        stats = {pid: s for pid in os.listdir("/proc") if pid.isdigit() and (s := process_stat(pid)) is not None}
        children: dict[int, list[str]] = {}
        for pid, (ppid, _) in stats.items():
            children.setdefault(ppid, []).append(pid)
        mine = [str(self.root)]
        # Each process's command line is read once (a pid reused meanwhile is a new process of
        # someone else's, or a child of one of ours, found through its parent): a sample reads
        # the stat files only, 6 ms of CPU with 180 processes on the machine.
        self._examined &= stats.keys()
        for pid in stats.keys() - self._examined:
            self._examined.add(pid)
            if pid != str(self.root) and any(m in _cmdline(pid) for m in self.markers):
                mine.append(pid)
        mine += [pid for pid in self.kind if pid in stats]
        seen: set[str] = set()
        while mine:
            pid = mine.pop()
            if pid in seen or pid not in stats:
                continue
            seen.add(pid)
            mine += children.get(int(pid), [])
            if pid not in self.kind:
                self.kind[pid] = self._kind(pid)
                # Born after the first sample: all its seconds are the run's.
                self.first[pid] = 0.0 if self._started else stats[pid][1]
            self.last[pid] = stats[pid][1]
        self.busy.append(machine_busy())
        self._started = True

    def _kind(self, pid: str) -> str:
        if pid == str(self.root):
            return "harness (clients, checks, faults)"
        command = _cmdline(pid)
        for needle, kind in KINDS:
            if needle in command:
                return kind
        return command.split(" ", 1)[0].rsplit("/", 1)[-1] or "other"

    def summary(self) -> dict[str, object]:
        by_kind: defaultdict[str, float] = defaultdict(float)
        for pid, last in self.last.items():
            by_kind[self.kind[pid]] += last - self.first[pid]
        run = sum(by_kind.values())
        busy = self.busy[-1] - self.busy[0] if len(self.busy) > 1 else 0.0
        ranked = sorted(by_kind.items(), key=lambda item: -item[1])
        return {
            "by_kind_s": {kind: round(seconds, 1) for kind, seconds in ranked},
            "run_s": round(run, 1),
            "machine_busy_s": round(busy, 1),
            "other_s": round(max(0.0, busy - run), 1),
            "cores": os.cpu_count(),
        }

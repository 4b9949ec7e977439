"""CPU time spent by each process of a benchmark, read from /proc (Linux).

A rate says how fast; the CPU each request costs in gunicorn, PostgreSQL, Redis and the load
generator says where the time goes, and on a machine where all of them share the cores, the
rate is roughly the cores divided by that total.
"""

import os
import resource
from collections.abc import Iterable, Mapping

_TICKS_PER_SECOND = os.sysconf("SC_CLK_TCK")


def _process_cpu_seconds(pid: int) -> float:
    """User + system time of one live process; 0 for one that is gone."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return 0.0
    fields = stat.rsplit(")", 1)[1].split()  # the command name may hold spaces and parentheses
    return (int(fields[11]) + int(fields[12])) / _TICKS_PER_SECOND


def _children(pid: int) -> list[int]:
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as handle:
            return [int(child) for child in handle.read().split()]
    except OSError:
        return []


def _named(name: str) -> list[int]:
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/comm") as handle:
                    if handle.read().strip() == name:
                        pids.append(int(entry))
            except OSError:
                continue
    return pids


class CpuMeter:
    """Snapshots of the CPU seconds used so far by: a process tree (the gunicorn master and its
    workers), every process with a given name (the PostgreSQL backends, redis-server), and this
    process's finished children (the load generator, once it has exited)."""

    def __init__(self, *, trees: Mapping[str, int], names: Mapping[str, str], finished_children: str):
        self.trees = dict(trees)
        self.names = dict(names)
        self.finished_children = finished_children

    def snapshot(self) -> dict[str, float]:
        seconds = {label: self._sum([root, *_children(root)]) for label, root in self.trees.items()}
        seconds |= {label: self._sum(_named(name)) for label, name in self.names.items()}
        usage = resource.getrusage(resource.RUSAGE_CHILDREN)
        seconds[self.finished_children] = usage.ru_utime + usage.ru_stime
        return seconds

    @staticmethod
    def _sum(pids: Iterable[int]) -> float:
        return sum(_process_cpu_seconds(pid) for pid in pids)


def per_request_ms(before: Mapping[str, float], after: Mapping[str, float], requests: int) -> dict[str, float]:
    """Milliseconds of CPU per request for each label, and their total."""
    spent = {label: 1000 * (after[label] - before.get(label, 0.0)) / max(requests, 1) for label in after}
    spent["total"] = sum(spent.values())
    return {label: round(ms, 3) for label, ms in spent.items()}

"""chaos/ports.py: the ports the tests' and the harness's servers are started on are never the
kernel's to give to another socket meanwhile, nor another process's of this module."""

from __future__ import annotations

import subprocess
import sys

from chaos import ports
from chaos.ports import ephemeral_range, free_port
from tests.support.processes import ROOT

# A child process whose random choices are the given ports first: it asks for one port.
CHILD = """
import random, sys
from chaos import ports
wanted = iter([int(p) for p in sys.argv[1:]])
random.randint = lambda low, high: next(wanted)
print(ports.free_port())
"""


def _child_port(*candidates: int) -> int:
    result = subprocess.run(
        [sys.executable, "-c", CHILD, *map(str, candidates)], cwd=ROOT, capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0, result.stderr
    return int(result.stdout)


def test_free_port__outside_the_ephemeral_range_distinct_and_bindable():
    """An outgoing connection's source port, or another bind(0), comes from the ephemeral range:
    a port outside it is taken by no one between being chosen and being bound."""
    low, high = ephemeral_range()
    chosen = [free_port() for _ in range(200)]
    assert not [port for port in chosen if low <= port <= high]
    assert len(set(chosen)) == len(chosen)
    assert all(ports._bindable(port) for port in chosen)


def _candidates(count: int) -> list[int]:
    """Ports this process holds none of (another process may hold some)."""
    low = ports.LOWEST + 1000
    return [port for port in range(low, low + count) if port not in ports._reserved]


def test_free_port__never_one_another_process_holds():
    held = free_port()
    others = _candidates(100)
    # The child is offered the port held here first: it takes another.
    got = _child_port(held, *others)
    assert got != held
    assert got in others


def test_free_port__reservation_ends_with_its_process(monkeypatch):
    port = _child_port(*_candidates(100))
    # The child has exited: its port can be reserved again, here.
    monkeypatch.setattr(ports.random, "randint", lambda low, high: port)
    assert free_port() == port

"""chaos/scaler.py's FaultGate: a dependency fault (a failover, a restart) and a network fault
never run at once, and each begins clear of the other's end by the gap."""

from __future__ import annotations

import threading
import time

from chaos.scaler import FaultGate


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _enter_in_thread(gate: FaultGate, group: str, stop: threading.Event, **kwargs) -> tuple[threading.Thread, list]:
    out: list = []
    thread = threading.Thread(target=lambda: out.append(gate.enter(group, stop, **kwargs)), daemon=True)
    thread.start()
    return thread, out


def test_fault_gate__dependency_fault_waits_for_the_network_fault_and_the_gap():
    clock, stop = Clock(), threading.Event()
    gate = FaultGate(clock)
    assert gate.enter("network", stop) == 0
    thread, out = _enter_in_thread(gate, "dependency", stop)
    time.sleep(0.3)
    assert out == []  # the partition is still on
    clock.t += 8
    gate.leave("network")
    time.sleep(0.3)
    assert out == []  # healed, but within the gap
    clock.t += gate.GAP
    thread.join(2)
    assert out == [8 + gate.GAP]


def test_fault_gate__network_fault_waits_for_a_dependency_fault_in_progress_or_waiting():
    clock, stop = Clock(), threading.Event()
    gate = FaultGate(clock)
    assert gate.enter("dependency", stop) == 0
    thread, out = _enter_in_thread(gate, "network", stop)
    time.sleep(0.3)
    clock.t += 20
    gate.leave("dependency")
    time.sleep(0.3)
    assert out == []
    clock.t += gate.GAP
    thread.join(2)
    assert out == [20 + gate.GAP]


def test_fault_gate__stop_ends_the_wait_and_overlap_waits_for_nothing():
    clock, stop = Clock(), threading.Event()
    gate = FaultGate(clock)
    gate.enter("dependency", stop)
    thread, out = _enter_in_thread(gate, "network", stop)
    stop.set()
    thread.join(2)
    assert out == [None]
    overlapping = FaultGate(clock, apart=False)
    overlapping.enter("dependency", threading.Event())
    assert overlapping.enter("network", threading.Event()) == 0


def test_fault_gate__dependency_faults_are_kept_their_own_gap_apart():
    clock, stop = Clock(), threading.Event()
    gate = FaultGate(clock)
    assert gate.enter("dependency", stop) == 0
    clock.t += 4
    gate.leave("dependency")
    thread, out = _enter_in_thread(gate, "dependency", stop)
    time.sleep(0.3)
    assert out == []  # the first one's replica may still be syncing
    clock.t += gate.DEPENDENCY_GAP
    thread.join(2)
    assert out == [gate.DEPENDENCY_GAP]

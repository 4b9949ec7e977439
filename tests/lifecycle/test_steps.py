"""The step runner: deadlines, cut-off hung steps, failures, skips, and the printed report."""

import time

from lifecycle.steps import Report, Step, StepResult, StepSkipped, StepStatus, format_report, run_step, run_steps


class Counting(Step):
    name = "counting"
    label = "Counting ({count})"

    def run(self, *, deadline: float) -> int:
        return 3


class Hanging(Step):
    name = "hanging"
    label = "Hanging"

    def run(self, *, deadline: float) -> int:
        time.sleep(60)
        return 0


class Failing(Step):
    name = "failing"
    label = "Failing"

    def run(self, *, deadline: float) -> int:
        raise RuntimeError("boom")


class Skipping(Step):
    name = "skipping"
    label = "Skipping"

    def run(self, *, deadline: float) -> int:
        raise StepSkipped("lifecycle.outbox is not installed")


def test_run_step__counts_and_labels():
    result = run_step(Counting(), deadline=time.monotonic() + 5)
    assert result.status == StepStatus.OK
    assert result.count == 3
    assert result.label == "Counting (3)"


def test_run_step__hung_step_is_cut_off_at_its_deadline():
    started = time.monotonic()
    result = run_step(Hanging(), deadline=started + 0.5)
    elapsed = time.monotonic() - started
    assert result.status == StepStatus.TIMED_OUT
    assert 0.45 <= elapsed < 1.0


def test_run_step__reserve_shortens_the_deadline():
    started = time.monotonic()
    run_step(Hanging(), deadline=started + 1.0, reserve=0.7)
    assert time.monotonic() - started < 0.6


def test_run_steps__a_failure_does_not_stop_the_sequence():
    report = run_steps(
        [Failing(), Skipping(), Counting()], report=Report(kind="shutdown", started_at=0), deadline=time.monotonic() + 5
    )
    assert [s.status for s in report.steps] == [StepStatus.FAILED, StepStatus.SKIPPED, StepStatus.OK]
    assert "RuntimeError: boom" in report.steps[0].detail
    assert not report.ok


def test_report__skipped_steps_are_ok_but_budget_overrun_is_not():
    report = Report(kind="shutdown", started_at=0, budget=10, duration=2.0)
    report.steps = [StepResult("a", "A", StepStatus.OK), StepResult("b", "B", StepStatus.SKIPPED)]
    assert report.ok
    report.duration = 10.5
    assert not report.ok


def test_format_report__one_line_per_step_and_a_summary():
    report = Report(kind="shutdown", started_at=0, budget=30, duration=0.97)
    report.steps = [
        StepResult("drain", "Draining (readiness 503)", StepStatus.OK, 0, 0.0),
        StepResult("finish_requests", "Finishing in-flight requests (3)", StepStatus.OK, 3, 0.84),
    ]
    lines = format_report(report)
    assert lines[0].startswith("Draining (readiness 503) ....")
    assert lines[0].endswith("0.00 s")
    assert "ok" in lines[1]
    assert lines[1].endswith("0.84 s")
    assert lines[-1] == "Stopped in 0.97 s of a 30 s budget; nothing left in memory."


class LeavingANote(Step):
    name = "noting"
    label = "Noting ({count})"

    def run(self, *, deadline: float) -> int:
        self.detail = "2 left to the next step"
        return 2


def test_run_step__a_step_that_went_well_may_leave_a_note():
    result = run_step(LeavingANote(), deadline=time.monotonic() + 5)
    assert result.status == StepStatus.OK
    assert result.detail == "2 left to the next step"
    assert run_step(Counting(), deadline=time.monotonic() + 5).detail == ""

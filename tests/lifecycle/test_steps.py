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
    assert lines[0] == "Flushing pending operations:"
    assert lines[1].startswith("  Draining (readiness 503) ....")
    assert lines[1].endswith("0.00 s")
    assert "ok" in lines[2]
    assert lines[2].endswith("0.84 s")
    assert lines[-2] == "Lost: 0"
    assert lines[-1] == "Stopped in 0.97 s of a 30 s budget; nothing left in memory."


def test_format_report__shutdown_steps_under_their_groups_and_what_was_lost():
    report = Report(kind="shutdown", started_at=0, budget=10, duration=9.5)
    report.steps = [
        StepResult(
            "finish_requests", "Finishing in-flight requests (5)", StepStatus.TIMED_OUT, 3, 8.0, lost=2, loses="request"
        ),
        StepResult("export_outbox", "Exporting outbox (7 events)", StepStatus.OK, 7, 0.2),
        StepResult(
            "persist_sessions", "Sessions already in Redis (4 active)", StepStatus.OK, 4, 0.01, group="sessions"
        ),
        StepResult("flush_logs", "Flushing log handlers (3)", StepStatus.OK, 3, 0.0, group="logs"),
        StepResult("close_connections", "Closing connections", StepStatus.OK, 2, 0.0, group="connections"),
    ]
    lines = format_report(report)
    assert [line for line in lines if not line.startswith("  ")] == [
        "Flushing pending operations:",
        "Persisting active sessions:",
        "Flushing logs:",
        "Closing connections:",
        "Lost: 2 requests",
        "Stopped in 9.50 s of a 10 s budget; NOT clean: see the steps above.",
    ]
    assert lines[1].startswith("  Finishing in-flight requests (5) ...")
    assert "timed out" in lines[1]
    # A group no heading names is printed under its own name.
    again = Report.from_dict({**report.as_dict(), "steps": [{**s.as_dict(), "group": "x"} for s in report.steps]})
    assert format_report(again)[0] == "X:"


def test_format_report__statuses_line_up_past_the_longest_label():
    report = Report(kind="shutdown", started_at=0, budget=30, duration=0.1)
    long = "Handing back replies in generation (12)"
    report.steps = [
        StepResult("drain", "Draining (readiness 503)", StepStatus.OK, 0, 0.0),
        StepResult("hand_back_replies", long, StepStatus.OK, 12, 0.0),
    ]
    lines = format_report(report)[1:3]
    assert {line.index(" ok ") for line in lines} == {len("  " + long + " ...")}


def test_format_report__a_recovery_report_has_no_groups():
    report = Report(kind="recovery", started_at=0, duration=0.1)
    report.steps = [StepResult("mark_lost", "Marking lost instances (0)", StepStatus.OK)]
    assert format_report(report) == [
        report.steps[0].label + " " + "." * 14 + " ok         0.00 s",
        "Recovered in 0.10 s; nothing left in memory.",
    ]


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


def test_flush_logs__flushes_every_handler(tmp_path):
    import logging

    from lifecycle.shutdown import FlushLogs

    class Buffered(logging.Handler):
        flushed = 0

        def emit(self, record):
            pass

        def flush(self):
            Buffered.flushed += 1

    handler = Buffered()
    logger = logging.getLogger("tests.flush_logs")
    logger.addHandler(handler)
    try:
        result = run_step(FlushLogs(), deadline=time.monotonic() + 5)
    finally:
        logger.removeHandler(handler)
    assert result.status == StepStatus.OK
    assert Buffered.flushed == 1
    assert result.count >= 1
    assert result.group == "logs"

"""System checks of the lifecycle settings (lifecycle.E002-E006)."""

from lifecycle.checks import check_lifecycle_steps, check_lifecycle_timings


def _ids(errors) -> list[str]:
    return [e.id for e in errors]


def test_checks__defaults_pass():
    assert check_lifecycle_timings(None) == []
    assert check_lifecycle_steps(None) == []


def test_checks__heartbeat_ttl_too_short(settings):
    settings.LIFECYCLE_HEARTBEAT_INTERVAL = 5
    settings.LIFECYCLE_HEARTBEAT_TTL = 6
    assert _ids(check_lifecycle_timings(None)) == ["lifecycle.E002"]


def test_checks__stalled_threshold_under_job_heartbeat(settings):
    settings.LIFECYCLE_STALLED_JOB_SECONDS = 1.5
    assert _ids(check_lifecycle_timings(None)) == ["lifecycle.E003"]


def test_checks__drain_delay_longer_than_deadline(settings, monkeypatch):
    monkeypatch.setenv("K_SERVICE", "omk")  # Cloud Run: a 9 s deadline
    settings.LIFECYCLE_DRAIN_DELAY = 10
    assert _ids(check_lifecycle_timings(None)) == ["lifecycle.E004"]


def test_checks__steps_must_import_and_be_steps(settings):
    settings.LIFECYCLE_SHUTDOWN_STEPS = ["lifecycle.shutdown.Nope", "lifecycle.steps.StepResult"]
    assert _ids(check_lifecycle_steps(None)) == ["lifecycle.E005", "lifecycle.E006"]

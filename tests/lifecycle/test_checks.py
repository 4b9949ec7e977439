"""System checks of the lifecycle settings (lifecycle.E002-E009)."""

from lifecycle.checks import check_lifecycle_steps, check_lifecycle_timings, check_wake


def _ids(errors) -> list[str]:
    return [e.id for e in errors]


def test_checks__defaults_pass():
    assert check_lifecycle_timings(None) == []
    assert check_lifecycle_steps(None) == []
    assert check_wake(None) == []


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


def test_checks__worker_hung_threshold_under_a_beat_in_a_redis_outage(settings):
    from lifecycle.checks import redis_longest_call

    # A beat while Redis is unreachable: four tries of 2 s each and the backoff between.
    assert 8 < redis_longest_call() < 10
    settings.LIFECYCLE_HEARTBEAT_INTERVAL = 5
    settings.LIFECYCLE_HEARTBEAT_TTL = 15
    settings.LIFECYCLE_WORKER_HUNG_SECONDS = 5 + redis_longest_call()
    assert _ids(check_lifecycle_timings(None)) == ["lifecycle.E007"]
    settings.LIFECYCLE_WORKER_HUNG_SECONDS += 0.5
    assert check_lifecycle_timings(None) == []


def test_checks__steps_must_import_and_be_steps(settings):
    settings.LIFECYCLE_SHUTDOWN_STEPS = ["lifecycle.shutdown.Nope", "lifecycle.steps.StepResult"]
    assert _ids(check_lifecycle_steps(None)) == ["lifecycle.E005", "lifecycle.E006"]


def test_checks__wake_without_its_token(settings):
    settings.LIFECYCLE_WAKE_TOKEN = ""
    settings.LIFECYCLE_WAKE_SERVE = True
    assert _ids(check_wake(None)) == ["lifecycle.E008"]
    settings.LIFECYCLE_WAKE_SERVE = False
    settings.LIFECYCLE_WAKE_URL = "https://omk-worker.example/internal/wake"
    assert _ids(check_wake(None)) == ["lifecycle.E008"]
    settings.LIFECYCLE_WAKE_TOKEN = "secret"
    assert check_wake(None) == []


def test_checks__drain_without_time(settings):
    settings.LIFECYCLE_DRAIN_MAX_SECONDS = 0
    assert _ids(check_wake(None)) == ["lifecycle.E009"]

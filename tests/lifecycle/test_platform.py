import pytest
from django.core.checks import run_checks

from lifecycle.platform import Platform, detect_platform


def test_detect_platform__cloud_run_has_ten_seconds():
    info = detect_platform({"K_SERVICE": "omk-web", "KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    assert info.platform is Platform.CLOUD_RUN
    assert info.shutdown_budget == 10
    assert info.shutdown_deadline == 9


def test_detect_platform__cloud_run_function_has_the_cloud_run_budget_and_no_drain_delay():
    from lifecycle.platform import default_drain_delay

    info = detect_platform({"K_SERVICE": "omk-decide", "FUNCTION_TARGET": "omk"})
    assert (info.platform, info.shutdown_budget, info.shutdown_deadline) == (Platform.CLOUD_RUN_FUNCTIONS, 10, 9)
    assert default_drain_delay(info) == 0
    # FUNCTION_TARGET alone (functions-framework run locally) is no platform of its own.
    assert detect_platform({"FUNCTION_TARGET": "omk"}).platform is Platform.LOCAL


def test_detect_platform__gke_reads_termination_grace_period():
    info = detect_platform({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "TERMINATION_GRACE_PERIOD": "45"})
    assert info.platform is Platform.GKE
    assert info.shutdown_budget == 45
    assert info.shutdown_deadline == pytest.approx(40.5)


def test_detect_platform__gke_defaults_to_thirty_seconds():
    info = detect_platform({"KUBERNETES_SERVICE_HOST": "10.0.0.1"})
    assert (info.platform, info.shutdown_budget) == (Platform.GKE, 30)


def test_detect_platform__local_has_thirty_seconds():
    info = detect_platform({})
    assert (info.platform, info.shutdown_budget) == (Platform.LOCAL, 30)


@pytest.mark.parametrize("value", ["soon", "0", "-5"])
def test_detect_platform__bad_grace_period_is_refused(value):
    with pytest.raises(ValueError, match="TERMINATION_GRACE_PERIOD"):
        detect_platform({"KUBERNETES_SERVICE_HOST": "10.0.0.1", "TERMINATION_GRACE_PERIOD": value})


def test_system_check__bad_grace_period_is_lifecycle_e001(monkeypatch):
    monkeypatch.setenv("KUBERNETES_SERVICE_HOST", "10.0.0.1")
    monkeypatch.setenv("TERMINATION_GRACE_PERIOD", "soon")
    ids = [message.id for message in run_checks()]
    assert "lifecycle.E001" in ids

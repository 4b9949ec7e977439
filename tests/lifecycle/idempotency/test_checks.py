import pytest

from lifecycle.idempotency.checks import check_idempotency_settings


def test_check_idempotency_settings__defaults_pass():
    assert check_idempotency_settings(None) == []


@pytest.mark.parametrize("value", [0, 600, "86400", 86400.0])
def test_check_idempotency_settings__retention_shorter_than_retries(settings, value):
    settings.IDEMPOTENCY_RETENTION_SECONDS = value
    assert [e.id for e in check_idempotency_settings(None)] == ["idempotency.E001"]

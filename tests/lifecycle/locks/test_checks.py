import pytest

from lifecycle.locks.checks import check_lock_settings


def ids(errors) -> set[str]:
    return {error.id for error in errors}


def test_check_lock_settings__defaults_pass():
    assert check_lock_settings(None) == []


@pytest.mark.parametrize(
    ("setting", "value", "error_id"),
    [
        ("LOCKS_TTL", 0, "locks.E001"),
        ("LOCKS_TTL", "30", "locks.E001"),
        ("LOCKS_TIMEOUT", -1, "locks.E002"),
        ("LOCKS_MAX_BLOCK", 0, "locks.E004"),
        ("LOCKS_FAIR_AFTER", -0.1, "locks.E003"),
        ("LOCKS_MAX_BLOCK", 5.0, "locks.E004"),  # above the 2 s socket timeout
    ],
)
def test_check_lock_settings__bad_values(settings, setting, value, error_id):
    setattr(settings, setting, value)
    assert ids(check_lock_settings(None)) == {error_id}

import pytest

from lifecycle.checks import check_lock_settings


def ids(errors) -> set[str]:
    return {error.id for error in errors}


def test_check_lock_settings__defaults_pass():
    assert check_lock_settings(None) == []


@pytest.mark.parametrize(
    ("setting", "value", "error_id"),
    [
        ("LIFECYCLE_LOCK_TTL", 0, "lifecycle.E010"),
        ("LIFECYCLE_LOCK_TTL", "30", "lifecycle.E010"),
        ("LIFECYCLE_LOCK_TIMEOUT", -1, "lifecycle.E011"),
        ("LIFECYCLE_LOCK_MAX_BLOCK", 0, "lifecycle.E012"),
        ("LIFECYCLE_LOCK_FAIR_AFTER", -0.1, "lifecycle.E013"),
        ("LIFECYCLE_LOCK_MAX_BLOCK", 5.0, "lifecycle.E012"),  # above the 2 s socket timeout
    ],
)
def test_check_lock_settings__bad_values(settings, setting, value, error_id):
    setattr(settings, setting, value)
    assert ids(check_lock_settings(None)) == {error_id}

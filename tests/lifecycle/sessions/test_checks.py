import pytest
from django.core.checks import run_checks

from lifecycle.sessions.checks import check_session_manager_settings, check_session_store


def test_check_session_store__defaults_pass():
    assert check_session_store(None) == []
    assert check_session_manager_settings(None) == []


def test_system_check__sessions_outside_redis_is_sessions_e002(settings):
    settings.SESSION_ENGINE = "django.contrib.sessions.backends.db"
    ids = [message.id for message in run_checks()]
    assert "sessions.E002" in ids


@pytest.mark.parametrize("value", [0, -5, "3600", True])
def test_check_session_manager_settings__bad_ttl(settings, value):
    settings.SESSIONS_TTL_SECONDS = value
    assert [e.id for e in check_session_manager_settings(None)] == ["sessions.E003"]

import pytest
from django.test import Client


@pytest.fixture
def other_user(db):
    from django.contrib.auth import get_user_model

    return get_user_model().objects.create_user(username="bob", password="bob-password-1")


@pytest.fixture
def other_client(other_user):
    from accounts.services import api_token_issue

    return Client(headers={"Authorization": f"Bearer {api_token_issue(user=other_user)[1]}"})


@pytest.fixture
def web_client(user):
    client = Client()
    client.force_login(user)
    return client


@pytest.fixture
def recovered():
    """Reads (sessions_recovered_total, hive_history_rebuilds_total{reason}) from this process."""
    from prometheus_client import REGISTRY

    def value(reason: str) -> tuple[float, float]:
        total = REGISTRY.get_sample_value("sessions_recovered_total") or 0.0
        by_reason = REGISTRY.get_sample_value("hive_history_rebuilds_total", {"reason": reason}) or 0.0
        return total, by_reason

    return value

import pytest
from prometheus_client import REGISTRY

pytestmark = pytest.mark.urls("tests.support.idempotency_urls")


def _replays(outcome: str) -> float:
    return REGISTRY.get_sample_value("idempotency_replays_total", {"outcome": outcome}) or 0.0


@pytest.mark.django_db
def test_idempotency_replays__counts_replays_and_reused_keys(api_client):
    replayed, reused = _replays("replayed"), _replays("key_reused")
    headers = {"Idempotency-Key": "metered"}
    for _ in range(2):
        api_client.post("/api/groups/", {"name": "m"}, content_type="application/json", headers=headers)
    api_client.post("/api/groups/", {"name": "other"}, content_type="application/json", headers=headers)
    assert (_replays("replayed") - replayed, _replays("key_reused") - reused) == (1, 1)

"""/health and /ready, in-process and on real gunicorn instances with a dependency down."""

import pytest
import requests

from lifecycle.drain import DRAIN_FLAG_ENV

CLOSED_PORT_REDIS = "redis://127.0.0.1:1/0"
CLOSED_PORT_DATABASE = "postgres://postgres@127.0.0.1:1/omk"


@pytest.mark.django_db
def test_ready__all_checks_pass(client):
    response = client.get("/ready")
    assert response.status_code == 200
    checks = {"database": "ok", "redis": "ok", "draining": "ok", "recovery": "ok"}
    assert response.json() == {"status": "ok", "checks": checks}


def test_health__answers_without_dependencies(client):
    response = client.get("/health", HTTP_HOST="10.12.0.7:8000")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


@pytest.mark.django_db
def test_ready__pod_ip_as_host_is_accepted(client, settings):
    settings.ALLOWED_HOSTS = ["omk.example.com"]
    assert client.get("/ready", HTTP_HOST="10.12.0.7:8000").status_code == 200


@pytest.mark.django_db
def test_ready__draining_instance_is_503(client, monkeypatch, tmp_path):
    flag = tmp_path / "draining"
    flag.touch()
    monkeypatch.setenv(DRAIN_FLAG_ENV, str(flag))
    response = client.get("/ready")
    assert response.status_code == 503
    assert response.json()["checks"]["draining"].startswith("Unavailable")
    assert response.json()["checks"]["database"] == "ok"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_instance__redis_down(start_instance):
    instance = start_instance(REDIS_URL=CLOSED_PORT_REDIS)

    ready = requests.get(instance.url + "/ready", timeout=10)
    assert ready.status_code == 503
    assert ready.json()["checks"]["redis"].startswith("Unavailable")
    assert ready.json()["checks"]["database"] == "ok"
    assert requests.get(instance.url + "/health", timeout=5).status_code == 200

    # A visitor with a session (an anonymous one touches no Redis on the home page).
    session = {"sessionid": "a" * 32}
    page = requests.get(instance.url + "/", cookies=session, timeout=10)
    assert page.status_code == 503
    assert page.headers["Retry-After"] == "5"
    assert "Traceback" not in page.text
    api = requests.get(instance.url + "/", cookies=session, headers={"Accept": "application/json"}, timeout=10)
    assert api.status_code == 503
    assert api.json()["dependency"] == "redis"


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_instance__database_down(start_instance):
    instance = start_instance(DATABASE_URL=CLOSED_PORT_DATABASE, DB_POOL_TIMEOUT="0.5")

    ready = requests.get(instance.url + "/ready", timeout=10)
    assert ready.status_code == 503
    assert ready.json()["checks"]["database"].startswith("Unavailable")
    assert ready.json()["checks"]["redis"] == "ok"
    assert requests.get(instance.url + "/health", timeout=5).status_code == 200

    page = requests.get(instance.url + "/", timeout=10)
    assert page.status_code == 503
    assert page.headers["Retry-After"] == "5"
    assert "database" in page.text
    assert "Traceback" not in page.text


@pytest.mark.django_db
def test_ready__draining_is_not_logged_as_an_error(client, monkeypatch, tmp_path, caplog):
    flag = tmp_path / "draining"
    flag.touch()
    monkeypatch.setenv(DRAIN_FLAG_ENV, str(flag))
    with caplog.at_level("INFO"):
        assert client.get("/ready").status_code == 503
    assert not [r for r in caplog.records if r.levelname == "ERROR"]

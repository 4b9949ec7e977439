"""Log records carry the request id and the instance id; JSON in production is one object a line."""

import io
import json
import logging
import logging.config

import pytest

from lifecycle.registry import INSTANCE_ID_ENV


@pytest.fixture
def json_logs(settings):
    """The project's logging config as production sets it (JSON), writing to a buffer."""
    buffer = io.StringIO()
    config = {**settings.LOGGING, "handlers": {**settings.LOGGING["handlers"]}}
    config["handlers"]["stdout"] = {**config["handlers"]["stdout"], "formatter": "json", "stream": buffer}
    logging.config.dictConfig(config)
    yield buffer
    logging.config.dictConfig(settings.LOGGING)


def _view_logging(request):
    from django.http import JsonResponse

    logging.getLogger("omk.test").warning("inside the view")
    return JsonResponse({})


@pytest.mark.django_db
def test_request_id__logged_and_returned(client, json_logs, monkeypatch, settings):
    monkeypatch.setenv(INSTANCE_ID_ENV, "web-test-1")
    settings.ROOT_URLCONF = __name__
    response = client.get("/log", HTTP_X_REQUEST_ID="abc123")

    assert response["X-Request-ID"] == "abc123"
    lines = [line for line in json_logs.getvalue().splitlines() if "inside the view" in line]
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["severity"] == "WARNING"
    assert record["message"] == "inside the view"
    assert record["request_id"] == "abc123"
    assert record["instance_id"] == "web-test-1"


def test_request_id__generated_when_absent(client, settings):
    settings.ROOT_URLCONF = __name__
    first = client.get("/log")["X-Request-ID"]
    second = client.get("/log")["X-Request-ID"]
    assert len(first) == 32
    assert first != second


from django.urls import path  # noqa: E402

urlpatterns = [path("log", _view_logging)]


def test_json_logs__follow_settings_production_or_log_format(monkeypatch):
    from lifecycle.logs import json_logs

    monkeypatch.delenv("LOG_FORMAT", raising=False)
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "settings.local")
    assert not json_logs()
    monkeypatch.setenv("LOG_FORMAT", "json")
    assert json_logs()
    monkeypatch.setenv("LOG_FORMAT", "text")
    monkeypatch.setenv("DJANGO_SETTINGS_MODULE", "settings.production")
    assert json_logs()  # production forces JSON, as settings/production.py does


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_gunicorn_json_logs__access_line_has_the_request_and_instance_ids(start_instance):
    """gunicorn with the production log format: its access and error lines are JSON objects,
    the access line with the same request_id the application logged under, and instance_id."""
    import requests

    from lifecycle.models import Instance

    # LOG_FORMAT=json is what settings.production forces; gunicorn at INFO logs its own lines too.
    instance = start_instance(wait_for="/ready", LOG_FORMAT="json", LOG_LEVEL="INFO")
    response = requests.get(instance.url + "/?page=1", headers={"X-Request-ID": "req-json-1"}, timeout=10)
    assert response.status_code == 200
    instance_id = Instance.objects.get(pid=instance.pid, kind="web").id
    instance.signal(15)
    instance.process.wait(timeout=30)

    records = [json.loads(line) for line in instance.log_path.read_text().splitlines() if line.strip()]
    access = [r for r in records if r.get("name") == "gunicorn.access" and r["request_id"] == "req-json-1"]
    assert len(access) == 1, records
    line = access[0]
    assert line["instance_id"] == instance_id
    assert line["message"] == "GET /?page=1 200"
    assert line["severity"] == "INFO"
    assert line["httpRequest"]["status"] == 200
    assert line["httpRequest"]["requestUrl"] == "/?page=1"
    assert line["httpRequest"]["latency"].endswith("s")
    errors = [r for r in records if r.get("name") == "gunicorn.error"]
    assert errors, "gunicorn's error log (Booting worker, ...) is JSON too"
    assert {r["instance_id"] for r in errors} == {instance_id}

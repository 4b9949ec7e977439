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

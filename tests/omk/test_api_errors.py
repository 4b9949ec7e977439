import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_schema__served_with_docs():
    client = Client()
    schema = client.get("/api/openapi.json")
    assert schema.status_code == 200
    assert "/api/auth/login" in schema.json()["paths"]
    assert client.get("/api/docs").status_code == 200


def test_body_limit__over_64_kib_is_413_before_auth():
    body = '{"username": "' + "a" * (64 * 1024) + '", "password": "x"}'
    response = Client().post("/api/auth/login", body, content_type="application/json")
    assert response.status_code == 413
    assert response.json()["error"] == "payload_too_large"


def test_body_limit__just_under_is_parsed(user):
    body = '{"username": "alice", "password": "' + "a" * 4000 + '"}'
    assert Client().post("/api/auth/login", body, content_type="application/json").status_code == 401


def test_invalid_json__is_400_naming_the_body():
    response = Client().post("/api/auth/login", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert response.json()["fields"] == {"body": ["The request body is not valid JSON."]}


def test_unknown_api_path__is_json_404():
    response = Client().get("/api/nothing-here/")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_wrong_method__is_json_405():
    response = Client().delete("/api/auth/login")
    assert response.status_code == 405
    assert response.json()["error"] == "method_not_allowed"

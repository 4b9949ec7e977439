import pytest
from django.test import Client

pytestmark = pytest.mark.django_db


def test_schema__served_with_docs():
    client = Client()
    schema = client.get("/api/openapi.json")
    assert schema.status_code == 200
    assert "/api/auth/login" in schema.json()["paths"]
    docs = client.get("/api/docs")
    assert docs.status_code == 200
    assert b"swagger-ui" in docs.content


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


def test_nul_character__is_422_naming_the_field(user):
    body = '{"username": "al\\u0000ice", "password": "x"}'
    response = Client().post("/api/auth/login", body, content_type="application/json")
    assert response.status_code == 422
    assert list(response.json()["fields"]) == ["username"]


def test_escaped_backslash_u0000_is_not_a_nul(user):
    body = '{"username": "al\\\\u0000ice", "password": "x"}'  # the text \\u0000, no NUL
    assert Client().post("/api/auth/login", body, content_type="application/json").status_code == 401


@pytest.mark.urls("tests.support.idempotency_urls")
@pytest.mark.parametrize("debug", [False, True])
def test_dependency_outage_in_a_view__is_503_with_retry_after(api_client, settings, debug):
    settings.DEBUG = debug  # ninja's default handler would answer a traceback with 500 under DEBUG
    response = api_client.get("/api/outage/")
    assert response.status_code == 503
    assert response["Retry-After"]
    assert response.json()["error"] == "service_unavailable"


@pytest.mark.urls("tests.support.idempotency_urls")
def test_lock_held_elsewhere__is_409_busy_with_retry_after(api_client):
    from lifecycle.locks import distributed_lock

    with distributed_lock.acquire("api-busy-test"):
        response = api_client.post("/api/busy/")
    assert response.status_code == 409
    assert response.json()["error"] == "busy"
    assert "retry shortly" in response.json()["detail"]
    assert response["Retry-After"] == "1"
    assert api_client.post("/api/busy/").json() == {"done": True}


def test_repeated_query_parameter__is_400_naming_it(api_client):
    response = api_client.get("/api/sales/?offset=false&offset=0&limit=5")
    assert response.status_code == 400
    assert response.json()["fields"] == {"offset": ["Given 2 times; send it once."]}
    assert api_client.get("/api/sales/?offset=0&limit=5").status_code == 200


@pytest.mark.parametrize("path", ["/api/sales/", "/api/board/"])
@pytest.mark.parametrize("value", ["0.0", " 5 ", "1_000", "1e3"])
def test_paging_parameter_not_in_digits__is_422_naming_it(api_client, path, value):
    response = api_client.get(path, {"offset": value})
    assert response.status_code == 422, response.content
    assert list(response.json()["fields"]) == ["offset"]

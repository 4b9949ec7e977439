import pytest
from django.core.management import call_command
from django.test import Client

from accounts.models import ApiToken
from accounts.services import api_token_revoke, hash_token

pytestmark = pytest.mark.django_db


def test_issue_token__prints_a_token_stored_only_hashed(user, capsys):
    call_command("issue_token", "alice")
    raw = capsys.readouterr().out.strip()
    token = ApiToken.objects.get(user=user)
    assert raw.startswith("omk_")
    assert token.key_hash == hash_token(raw)
    assert raw not in (token.key_hash, token.prefix)
    response = Client().get("/api/auth/me", headers={"Authorization": f"Bearer {raw}"})
    assert response.status_code == 200
    assert response.json()["username"] == "alice"


def test_issue_token__unknown_user_is_an_error(db):
    from django.core.management.base import CommandError

    with pytest.raises(CommandError, match="nobody"):
        call_command("issue_token", "nobody")


def test_bearer__missing_is_401_json(db):
    response = Client().get("/api/auth/me")
    assert response.status_code == 401
    body = response.json()
    assert body["error"] == "not_authenticated"
    assert "Bearer" in body["detail"]
    assert body["fields"] == {}


def test_bearer__wrong_token_is_401_naming_the_token(db):
    response = Client().get("/api/auth/me", headers={"Authorization": "Bearer omk_not-a-real-token"})
    assert response.status_code == 401
    assert "invalid or has been revoked" in response.json()["detail"]


def test_bearer__revoked_token_is_401(user, api_token, api_client):
    assert api_client.get("/api/auth/me").status_code == 200
    api_token_revoke(token=ApiToken.objects.get(key_hash=hash_token(api_token)))
    assert api_client.get("/api/auth/me").status_code == 401


def test_bearer__inactive_user_is_401(user, api_client):
    user.is_active = False
    user.save()
    assert api_client.get("/api/auth/me").status_code == 401


def test_login__wrong_password_is_401(user):
    response = Client().post(
        "/api/auth/login", {"username": "alice", "password": "nope"}, content_type="application/json"
    )
    assert response.status_code == 401
    assert response.json()["error"] == "invalid_credentials"


def test_login__missing_field_is_422_naming_it(db):
    response = Client().post("/api/auth/login", {"username": "alice"}, content_type="application/json")
    assert response.status_code == 422
    assert list(response.json()["fields"]) == ["password"]


def test_login__session_then_csrf_required_for_unsafe_methods(user):
    client = Client(enforce_csrf_checks=True)
    response = client.post(
        "/api/auth/login", {"username": "alice", "password": "alice-password-1"}, content_type="application/json"
    )
    assert response.status_code == 200
    csrf = response.json()["csrf_token"]
    assert client.get("/api/auth/me").json()["username"] == "alice"
    # An unsafe method with the session but without the CSRF token: refused, nothing done.
    refused = client.post("/api/auth/logout")
    assert refused.status_code == 403
    assert "CSRF" in refused.json()["detail"]
    assert client.get("/api/auth/me").status_code == 200
    assert client.post("/api/auth/logout", headers={"X-CSRFToken": csrf}).status_code == 204
    assert client.get("/api/auth/me").status_code == 401


def test_login__form_encoded_post_is_415(user):
    # What a cross-site form could send: refused, so no login CSRF.
    response = Client().post(
        "/api/auth/login", '{"username": "alice", "password": "alice-password-1"}', content_type="text/plain"
    )
    assert response.status_code == 415
    assert "sessionid" not in response.cookies

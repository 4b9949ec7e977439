"""The smaller holes, each closed: headers, request ids, API docs, drafts, error messages, page
parameters, session serialization, token expiry."""

import pickle
from datetime import timedelta
from decimal import Decimal

import pytest
from django.conf import settings
from django.core.management import call_command
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from accounts.models import ApiToken
from accounts.services import api_token_issue
from core.redis import redis_client
from governance import services

pytestmark = pytest.mark.django_db


# --- headers and request ids ---------------------------------------------------------------------


def test_pages__carry_a_content_security_policy(client):
    policy = client.get("/login/")["Content-Security-Policy"]
    for directive in ("default-src 'self'", "script-src 'self'", "frame-ancestors 'none'", "object-src 'none'"):
        assert directive in policy


@pytest.mark.parametrize("sent", ["x" * 65, "a b", "evil\x7f", "<script>", "id;drop"])
def test_request_id__a_long_or_unusual_one_is_replaced(client, sent):
    returned = client.get("/login/", headers={"X-Request-ID": sent})["X-Request-ID"]
    assert returned != sent
    assert len(returned) == 32


def test_request_id__a_short_plain_one_is_kept(client):
    assert client.get("/login/", headers={"X-Request-ID": "req-42.a_b"})["X-Request-ID"] == "req-42.a_b"


# --- API docs ------------------------------------------------------------------------------------


def test_api_docs__staff_only_when_not_public_and_assets_served_locally(settings, user, staff_user):
    settings.OMK_API_DOCS_PUBLIC = False
    anonymous, member, staff = Client(), Client(), Client()
    member.force_login(user)
    staff.force_login(staff_user)
    for client in (anonymous, member):
        assert client.get("/api/docs").status_code == 302  # to the admin's login
        assert client.get("/api/openapi.json").status_code == 302
    page = staff.get("/api/docs")
    assert page.status_code == 200
    html = page.content.decode()
    assert "cdn.jsdelivr.net" not in html
    assert "/static/ninja/" in html
    assert staff.get("/api/openapi.json").status_code == 200


# --- drafts ----------------------------------------------------------------------------------------


def test_drafts__visible_to_staff_only(api_client, staff_client, staff_user, user):
    now = timezone.now()
    draft = services.proposal_create(
        proposer=staff_user,
        title="Secret plan",
        voting_starts_at=now - timedelta(minutes=1),
        voting_ends_at=now + timedelta(days=1),
        quorum=Decimal(1),
    )
    assert api_client.get(f"/api/proposals/{draft.pk}/").status_code == 404
    assert api_client.get("/api/proposals/").json() == []
    vote = api_client.post(f"/api/proposals/{draft.pk}/votes/", {"choice": "for"}, content_type="application/json")
    assert vote.status_code == 404
    assert staff_client.get(f"/api/proposals/{draft.pk}/").status_code == 200
    assert [p["id"] for p in staff_client.get("/api/proposals/").json()] == [draft.pk]
    browser = Client()
    browser.force_login(user)
    assert browser.get(f"/proposals/{draft.pk}/").status_code == 404
    assert "Secret plan" not in browser.get("/proposals/").content.decode()


# --- error messages ----------------------------------------------------------------------------------


def test_data_error__does_not_echo_postgresqls_message(db):
    from django.db import DataError
    from ninja import NinjaAPI

    from core.handlers import install_error_handlers

    api = NinjaAPI(urls_namespace="hardening-test")
    install_error_handlers(api)
    request = Client().get("/").wsgi_request
    exc = DataError('value too long for type character varying(42)\nCONTEXT: column "wallet" of "governance_purchase"')
    handler = api._lookup_exception_handler(exc)
    assert handler is not None
    response = handler(request, exc)
    assert response.status_code == 422
    body = response.content.decode()
    assert "character varying" not in body
    assert "governance_purchase" not in body


# --- page parameters ---------------------------------------------------------------------------------


@pytest.mark.parametrize("offset", ["99999999999999999999999", "-1", "1.5", "abc", "1000001"])
def test_board_page__bad_offset_is_400_with_a_message(web_client, offset):
    response = web_client.get(f"/hive/board/?offset={offset}")
    assert response.status_code == 400
    assert "offset: must be a whole number" in response.content.decode()


def test_board_page__good_offset_is_served(web_client):
    assert web_client.get("/hive/board/?offset=20").status_code == 200


@pytest.fixture
def web_client(user):
    client = Client()
    client.force_login(user)
    return client


# --- session serialization ---------------------------------------------------------------------------


def test_sessions__stored_as_json_not_pickles(web_client):
    web_client.get("/")
    key = web_client.cookies[settings.SESSION_COOKIE_NAME].value
    [redis_key] = redis_client().keys(f"*{key}*")
    raw = redis_client().get(redis_key)
    assert raw.startswith(b"{")
    assert b'"_auth_user_id"' in raw


class _Boom:
    def __reduce__(self):
        return (exec, ("import pathlib; pathlib.Path('/tmp/omk-pickle-ran').write_text('x')",))


def test_sessions__a_pickle_in_redis_is_never_unpickled_and_logs_out_once(user, tmp_path):
    import os

    from django.core.cache import caches

    client = Client()
    client.force_login(user)
    key = client.cookies[settings.SESSION_COOKIE_NAME].value
    redis_key = caches["default"].make_key(f"django.contrib.sessions.cache{key}")
    # What an older release stored (a pickle), or what someone with access to Redis planted.
    redis_client().set(redis_key, pickle.dumps({"_auth_user_id": str(user.pk), "x": _Boom()}), ex=3600)
    if os.path.exists("/tmp/omk-pickle-ran"):
        os.remove("/tmp/omk-pickle-ran")
    response = client.get("/api/auth/me")
    assert response.status_code == 401  # logged out, cleanly
    assert not os.path.exists("/tmp/omk-pickle-ran")
    client.force_login(user)
    assert client.get("/api/auth/me").status_code == 200


# --- API tokens ------------------------------------------------------------------------------------


def test_token__expired_is_401_saying_so(user):
    token, raw = api_token_issue(user=user, expires_in=timedelta(hours=1))
    client = Client(headers={"Authorization": f"Bearer {raw}"})
    assert client.get("/api/auth/me").status_code == 200
    ApiToken.objects.filter(pk=token.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    response = client.get("/api/auth/me")
    assert response.status_code == 401
    assert "expired" in response.json()["detail"]


def test_token__last_used_is_recorded_at_most_once_a_minute(user):
    token, raw = api_token_issue(user=user)
    client = Client(headers={"Authorization": f"Bearer {raw}"})
    client.get("/api/auth/me")
    first = ApiToken.objects.get(pk=token.pk).last_used_at
    assert first is not None
    client.get("/api/auth/me")
    assert ApiToken.objects.get(pk=token.pk).last_used_at == first


def test_issue_token__expires_in_default_90_days_and_given(user, capsys):
    call_command("issue_token", "alice")
    default = ApiToken.objects.get()
    assert abs((default.expires_at - timezone.now()) - timedelta(days=90)) < timedelta(minutes=1)
    call_command("issue_token", "alice", "--expires-in", "12h")
    short = ApiToken.objects.order_by("-created_at").first()
    assert abs((short.expires_at - timezone.now()) - timedelta(hours=12)) < timedelta(minutes=1)


def test_token_admin__a_token_cannot_move_to_another_user(user, django_user_model):
    admin = Client()
    admin.force_login(django_user_model.objects.create_superuser(username="root", password="pw-root-1"))
    other = django_user_model.objects.create_user(username="mallory")
    token, _ = api_token_issue(user=user)
    url = reverse("admin:accounts_apitoken_change", args=[token.pk])
    admin.post(url, {"user": other.pk, "name": "moved", "revoked_at_0": "", "revoked_at_1": ""})
    token.refresh_from_db()
    assert token.user_id == user.pk


# --- /metrics ------------------------------------------------------------------------------------


def test_metrics__not_through_the_ingress_when_not_public(settings):
    settings.LIFECYCLE_METRICS_PUBLIC = False
    settings.LIFECYCLE_METRICS_TOKEN = "scrape-secret"
    through_balancer = {"HTTP_X_FORWARDED_FOR": "6.6.6.6, 130.211.0.1"}
    assert Client().get("/metrics", **through_balancer).status_code == 404
    assert Client().get("/metrics", HTTP_FORWARDED="for=6.6.6.6").status_code == 404
    assert Client().get("/metrics").status_code == 200  # Prometheus scraping the pod
    with_token = Client(headers={"Authorization": "Bearer scrape-secret"})
    assert with_token.get("/metrics", **through_balancer).status_code == 200

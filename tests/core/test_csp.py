import pytest
from django.http import HttpResponse
from django.test import RequestFactory, override_settings

from core.csp import ContentSecurityPolicyMiddleware, policy_header

POLICY = {
    "EXCLUDE_URL_PREFIXES": ["/api/docs"],
    "DIRECTIVES": {
        "default-src": ["'self'"],
        "img-src": ["'self'", "data:", "'self'"],
        "upgrade-insecure-requests": True,
        "report-to": None,
        "sandbox": False,
    },
}


def answer(request, *, status=200, headers=None):
    response = HttpResponse(status=status, headers=headers)
    return ContentSecurityPolicyMiddleware(lambda _request: response)(request)


def test_policy_header__directives_in_order_deduplicated_and_flags_bare():
    assert policy_header(POLICY["DIRECTIVES"]) == "default-src 'self'; img-src 'self' data:; upgrade-insecure-requests"


@override_settings(CONTENT_SECURITY_POLICY=POLICY)
def test_csp__set_on_responses_but_not_under_an_excluded_prefix():
    factory = RequestFactory()
    assert answer(factory.get("/login/"))["Content-Security-Policy"].startswith("default-src 'self'; img-src")
    assert "Content-Security-Policy" not in answer(factory.get("/api/docs"))
    assert "Content-Security-Policy-Report-Only" not in answer(factory.get("/login/"))


@override_settings(CONTENT_SECURITY_POLICY=POLICY)
def test_csp__a_header_the_view_set_is_kept():
    response = answer(RequestFactory().get("/"), headers={"Content-Security-Policy": "default-src 'none'"})
    assert response["Content-Security-Policy"] == "default-src 'none'"


def test_csp__follows_a_changed_setting():
    request = RequestFactory().get("/")
    with override_settings(CONTENT_SECURITY_POLICY={"DIRECTIVES": {"default-src": ["'none'"]}}):
        assert answer(request)["Content-Security-Policy"] == "default-src 'none'"
    with override_settings(
        CONTENT_SECURITY_POLICY=None,
        CONTENT_SECURITY_POLICY_REPORT_ONLY={"DIRECTIVES": {"script-src": ["'self'"]}},
    ):
        response = answer(request)
        assert "Content-Security-Policy" not in response
        assert response["Content-Security-Policy-Report-Only"] == "script-src 'self'"


@pytest.mark.parametrize("status", [404, 500])
@override_settings(CONTENT_SECURITY_POLICY=POLICY, DEBUG=True)
def test_csp__none_on_debug_error_pages(status):
    assert "Content-Security-Policy" not in answer(RequestFactory().get("/"), status=status)

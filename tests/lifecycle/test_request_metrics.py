"""Request metrics on /metrics: by route (the URL pattern, not the raw path), method and status
class; a latency histogram; requests in flight; 503s by the dependency that caused them."""

import pytest
from prometheus_client import REGISTRY

from lifecycle.middleware import UNMATCHED, RequestMetricsMiddleware

PROPOSAL_ROUTE = "api/proposals/<proposal_id>/"


def _sample(name: str, **labels: str) -> float:
    return REGISTRY.get_sample_value(name, labels) or 0.0


@pytest.mark.django_db
def test_request_metrics__by_route_not_raw_path_method_and_status_class(api_client):
    before_404 = _sample("http_requests_total", route=PROPOSAL_ROUTE, method="GET", status="4xx")
    before_200 = _sample("http_requests_total", route="api/sales/", method="GET", status="2xx")
    before_hist = _sample("http_request_duration_seconds_count", route=PROPOSAL_ROUTE, method="GET")

    # Two different ids, one route: one series.
    assert api_client.get("/api/proposals/9999998/").status_code == 404
    assert api_client.get("/api/proposals/9999999/").status_code == 404
    assert api_client.get("/api/sales/").status_code == 200

    assert _sample("http_requests_total", route=PROPOSAL_ROUTE, method="GET", status="4xx") == before_404 + 2
    assert _sample("http_requests_total", route="api/sales/", method="GET", status="2xx") == before_200 + 1
    assert _sample("http_request_duration_seconds_count", route=PROPOSAL_ROUTE, method="GET") == before_hist + 2
    assert not any(
        "9999998" in sample.labels.get("route", "")
        for metric in REGISTRY.collect()
        for sample in metric.samples
        if sample.name.startswith("http_")
    )


def test_request_metrics__unmatched_path_and_odd_method_are_one_series_each(client):
    before = _sample("http_requests_total", route=UNMATCHED, method="other", status="4xx")
    assert client.generic("BREW", "/no/such/page/abc").status_code == 404
    assert client.generic("BREW", "/no/such/page/def").status_code == 404
    assert _sample("http_requests_total", route=UNMATCHED, method="other", status="4xx") == before + 2


def test_request_metrics__probes_are_not_counted(client):
    before = sum(s.value for m in REGISTRY.collect() for s in m.samples if s.name == "http_requests_total")
    client.get("/health")
    client.get("/metrics")
    after = sum(s.value for m in REGISTRY.collect() for s in m.samples if s.name == "http_requests_total")
    assert after == before


@pytest.mark.urls("tests.support.idempotency_urls")
def test_request_metrics__503_counted_by_its_dependency(api_client):
    before = _sample("http_unavailable_total", dependency="database", route="api/outage/")
    before_5xx = _sample("http_requests_total", route="api/outage/", method="GET", status="5xx")
    assert api_client.get("/api/outage/").status_code == 503
    assert _sample("http_unavailable_total", dependency="database", route="api/outage/") == before + 1
    assert _sample("http_requests_total", route="api/outage/", method="GET", status="5xx") == before_5xx + 1


def test_request_metrics__in_flight_while_the_view_runs(rf):
    seen = []

    def view(request):
        seen.append(_sample("http_requests_in_flight"))
        from django.http import HttpResponse

        return HttpResponse("ok")

    before = _sample("http_requests_in_flight")
    RequestMetricsMiddleware(view)(rf.get("/x"))
    assert seen == [before + 1]
    assert _sample("http_requests_in_flight") == before


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_request_metrics__aggregated_over_gunicorn_workers_on_metrics(start_instance):
    import requests

    instance = start_instance(wait_for="/ready")
    for _ in range(6):  # spread over the two workers by the kernel
        assert requests.get(instance.url + "/", timeout=10).status_code == 200
        assert requests.get(instance.url + "/api/sales/", timeout=10).status_code == 401
    text = requests.get(instance.url + "/metrics", timeout=10).text
    assert 'http_requests_total{method="GET",route="/",status="2xx"} 6.0' in text
    assert 'http_requests_total{method="GET",route="api/sales/",status="4xx"} 6.0' in text
    assert 'http_request_duration_seconds_count{method="GET",route="api/sales/"} 6.0' in text
    # Summed over the live workers: nothing is in flight while /metrics (not counted) answers.
    assert "http_requests_in_flight 0.0" in text

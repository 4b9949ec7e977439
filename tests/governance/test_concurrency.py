"""Races settled by PostgreSQL: many connections, and real gunicorn instances (several processes)."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from decimal import Decimal

import pytest
import requests
from django.db import connection
from django.db.models import Sum
from django.test import Client
from django.utils import timezone

from accounts.services import api_token_issue
from governance import services
from governance.models import Purchase, Sale, Vote
from tests.governance.conftest import WALLET


@pytest.mark.django_db(transaction=True)
def test_vote_cast__20_concurrent_votes_by_one_voter_make_one_vote(open_proposal, staked_user, api_token):
    barrier = threading.Barrier(20)

    def vote(choice: str):
        client = Client(headers={"Authorization": f"Bearer {api_token}"})
        barrier.wait()
        try:
            return client.post(
                f"/api/proposals/{open_proposal.pk}/votes/", {"choice": choice}, content_type="application/json"
            ).status_code
        finally:
            connection.close()

    with ThreadPoolExecutor(20) as pool:
        codes = list(pool.map(vote, ["for", "against"] * 10))
    assert sorted(codes) == [201] + [409] * 19
    assert Vote.objects.filter(proposal=open_proposal, voter=staked_user).count() == 1


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_purchase_create__concurrent_on_two_instances_never_exceed_allocation_or_cap(
    start_instance, staff_user, django_user_model
):
    now = timezone.now()
    sale = services.sale_create(
        actor=staff_user,
        token_price=Decimal("1"),
        allocation=Decimal("100"),
        per_buyer_cap=Decimal("30"),
        starts_at=now - timedelta(minutes=1),
        ends_at=now + timedelta(hours=1),
    )
    tokens = []
    for i in range(6):
        buyer = django_user_model.objects.create_user(username=f"buyer{i}", password="x")
        tokens.append(api_token_issue(user=buyer)[1])
    instances = [start_instance(), start_instance()]  # 2 instances x 2 worker processes x 4 threads
    # 6 buyers x 8 purchases of 7 tokens = 336 wanted; each buyer may get 4 (28 <= 30); 100 exist.
    jobs = [(tokens[i % 6], instances[i % 2].url) for i in range(48)]
    barrier = threading.Barrier(len(jobs))

    def buy(job):
        token, url = job
        barrier.wait()
        response = requests.post(
            f"{url}/api/purchases/",
            json={"sale": sale.pk, "wallet": WALLET, "amount": "7"},
            headers={"Authorization": f"Bearer {token}"},
            timeout=60,
        )
        return response.status_code, response.json()

    with ThreadPoolExecutor(len(jobs)) as pool:
        results = list(pool.map(buy, jobs))
    codes = [code for code, _ in results]
    assert set(codes) <= {201, 409}, results
    sale.refresh_from_db()
    purchases = Purchase.objects.filter(sale=sale)
    assert codes.count(201) == purchases.count() == 14  # 98 tokens: the 15th would oversell
    assert sale.sold == purchases.aggregate(total=Sum("tokens"))["total"] == Decimal(98)
    for row in purchases.values("buyer").annotate(total=Sum("tokens")):
        assert row["total"] <= Decimal(30)
    refusals = {body["error"] for code, body in results if code == 409}
    assert refusals <= {"sold_out", "cap_reached"}


@pytest.mark.slow
@pytest.mark.django_db(transaction=True)
def test_purchase_create__retry_after_instance_killed_after_commit_makes_one_purchase(
    start_instance, sale, user, api_token
):
    # This instance sleeps 30 s after COMMIT, before answering: we SIGKILL it in that window.
    doomed = start_instance(OMK_TEST_PAUSE_AFTER_COMMIT="30")
    body = {"sale": sale.pk, "wallet": WALLET, "amount": "3"}
    headers = {"Authorization": f"Bearer {api_token}", "Idempotency-Key": "buy-once-7f3a"}
    outcome: dict = {}

    def first_attempt():
        try:
            outcome["response"] = requests.post(f"{doomed.url}/api/purchases/", json=body, headers=headers, timeout=60)
        except requests.RequestException as exc:
            outcome["error"] = exc

    client_thread = threading.Thread(target=first_attempt)
    client_thread.start()
    deadline = time.monotonic() + 20
    while not Purchase.objects.filter(sale=sale).exists():
        assert time.monotonic() < deadline, "the purchase was never committed"
        time.sleep(0.05)
    doomed.kill()
    client_thread.join(timeout=10)
    assert "response" not in outcome, "the client must not have been answered before the kill"
    assert isinstance(outcome.get("error"), requests.ConnectionError)

    survivor = start_instance()
    retry = requests.post(f"{survivor.url}/api/purchases/", json=body, headers=headers, timeout=30)
    assert retry.status_code == 201
    assert retry.headers["Idempotent-Replayed"] == "true"
    purchase = Purchase.objects.get(sale=sale)
    assert retry.json()["id"] == purchase.pk
    assert retry.json()["tokens"] == "6.00000000"
    assert Sale.objects.get(pk=sale.pk).sold == Decimal(6)
    # The same key with another body is refused, not applied.
    other = requests.post(f"{survivor.url}/api/purchases/", json={**body, "amount": "4"}, headers=headers, timeout=30)
    assert other.status_code == 422
    assert Purchase.objects.filter(sale=sale).count() == 1

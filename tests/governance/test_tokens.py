"""Only paid tokens count: purchases reserve until paid, the signed webhook confirms them, the
token account and its ledger, stakes that spend the balance, and the worker's expiry."""

import json
import time
from datetime import timedelta
from decimal import Decimal

import pytest
from django.db import IntegrityError, transaction
from django.db.models import Sum
from django.test import Client
from django.utils import timezone

from core.errors import Conflict
from governance import services
from governance.models import LedgerEntry, Purchase, Sale, StakingPosition, TokenAccount, Vote
from tests.governance.conftest import WALLET, unlock
from tests.support.parallel import in_processes
from tests.support.tokens import fund, webhook_headers

pytestmark = pytest.mark.django_db

WEBHOOK = "/api/payments/webhook"


def post(client, path, body=None, **headers):
    return client.post(path, body or {}, content_type="application/json", headers=headers)


def deliver(body: dict, **signing):
    """The processor's webhook delivery: the exact bytes it signed."""
    raw = json.dumps(body).encode()
    return Client().post(WEBHOOK, raw, content_type="application/json", **webhook_headers(raw, **signing))


@pytest.fixture
def pending(user, sale):
    return services.purchase_create(buyer=user, sale_id=sale.pk, wallet=WALLET, amount=Decimal("5"))


def balance(user) -> Decimal:
    return TokenAccount.objects.filter(user=user).values_list("available", flat=True).first() or Decimal(0)


def assert_ledger_matches(user) -> None:
    total = LedgerEntry.objects.filter(user=user).aggregate(total=Sum("amount"))["total"] or Decimal(0)
    assert total == balance(user)


# --- purchases reserve, payments confirm -------------------------------------------------------


def test_purchase__pending_reserves_the_allocation_and_credits_nothing(user, sale, pending):
    assert (pending.status, pending.tokens) == ("pending", Decimal(10))
    assert Sale.objects.get(pk=sale.pk).sold == 10
    assert balance(user) == 0
    assert services.selectors.balance_get(user=user).pending == 10


def test_webhook__paid_confirms_once_and_credits_the_buyer(user, sale, pending, api_client):
    response = deliver({"purchase": pending.pk, "status": "paid", "reference": "pay_1"})
    assert response.status_code == 200, response.content
    assert response.json() == {"purchase": pending.pk, "status": "confirmed", "changed": True}
    assert balance(user) == 10
    assert LedgerEntry.objects.get(user=user).reason == "purchase_confirmed"
    assert api_client.get("/api/balance/").json() == {"available": "10.00000000", "staked": "0", "pending": "0"}

    again = deliver({"purchase": pending.pk, "status": "paid", "reference": "pay_1"})
    assert again.status_code == 200
    assert again.json()["changed"] is False
    assert balance(user) == 10
    assert LedgerEntry.objects.count() == 1
    assert Sale.objects.get(pk=sale.pk).sold == 10


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"HTTP_PAYMENT_SIGNATURE": "garbage"},
        {"HTTP_PAYMENT_SIGNATURE": f"t={int(time.time())},v1={'0' * 64}"},
    ],
    ids=["missing", "malformed", "wrong-digest"],
)
def test_webhook__bad_or_missing_signature_is_400_and_changes_nothing(user, pending, headers):
    body = json.dumps({"purchase": pending.pk, "status": "paid", "reference": "pay_1"}).encode()
    response = Client().post(WEBHOOK, body, content_type="application/json", **headers)
    assert response.status_code == 400
    assert response.json()["error"] == "invalid_signature"
    assert "Payment-Signature" in response.json()["fields"]
    assert Purchase.objects.get(pk=pending.pk).status == "pending"
    assert balance(user) == 0


def test_webhook__old_future_other_secret_or_tampered_body_is_400(user, pending):
    body = {"purchase": pending.pk, "status": "paid", "reference": "pay_1"}
    # Outside the 300 s window by a margin: `now` is truncated and the first delivery takes time,
    # so a future timestamp at +301 could be inside the window by the time it is checked.
    now = int(time.time())
    assert deliver(body, timestamp=now - 320).status_code == 400
    assert deliver(body, timestamp=now + 320).status_code == 400
    assert deliver(body, secret="someone-elses-secret").status_code == 400
    signed = json.dumps(body).encode()
    tampered = json.dumps({**body, "purchase": pending.pk + 1}).encode()
    response = Client().post(WEBHOOK, tampered, content_type="application/json", **webhook_headers(signed))
    assert response.status_code == 400
    assert Purchase.objects.get(pk=pending.pk).status == "pending"
    # Within the window the processor's delivery counts.
    assert deliver(body, timestamp=now - 290).status_code == 200


def test_webhook__signed_but_invalid_body_is_422_naming_the_field(pending):
    response = deliver({"purchase": pending.pk, "status": "refunded", "reference": "pay_1"})
    assert response.status_code == 422
    assert "status" in response.json()["fields"]
    assert Purchase.objects.get(pk=pending.pk).status == "pending"


def test_webhook__unknown_purchase_is_404(db):
    assert deliver({"purchase": 987654, "status": "paid", "reference": "pay_x"}).status_code == 404


def test_webhook__failed_releases_the_reservation(user, sale, pending):
    response = deliver({"purchase": pending.pk, "status": "failed", "reference": "pay_2"})
    assert response.json() == {"purchase": pending.pk, "status": "failed", "changed": True}
    assert Sale.objects.get(pk=sale.pk).sold == 0
    assert balance(user) == 0
    # A later "paid" for the failed purchase (another payment) changes nothing.
    late = deliver({"purchase": pending.pk, "status": "paid", "reference": "pay_3"})
    assert late.status_code == 409
    assert late.json()["error"] == "purchase_failed"
    assert balance(user) == 0


def test_webhook__a_reference_settles_one_purchase_and_a_purchase_is_paid_once(user, sale, pending):
    other = services.purchase_create(buyer=user, sale_id=sale.pk, wallet=WALLET, amount=Decimal("1"))
    assert deliver({"purchase": pending.pk, "status": "paid", "reference": "pay_1"}).status_code == 200
    reused = deliver({"purchase": other.pk, "status": "paid", "reference": "pay_1"})
    assert (reused.status_code, reused.json()["error"]) == (409, "reference_used")
    twice = deliver({"purchase": pending.pk, "status": "paid", "reference": "pay_9"})
    assert (twice.status_code, twice.json()["error"]) == (409, "purchase_confirmed")
    assert balance(user) == 10
    assert Purchase.objects.get(pk=other.pk).status == "pending"


def test_purchase_confirmed_twice__refused_by_the_database(user, pending):
    services.purchase_settle(purchase_id=pending.pk, paid=True, reference="pay_1")
    with pytest.raises(IntegrityError), transaction.atomic():
        LedgerEntry.objects.create(user=user, amount=pending.tokens, reason="purchase_confirmed", purchase=pending)


# --- expiry --------------------------------------------------------------------------------------


def test_expiry__worker_expires_due_reservations_and_releases_them(user, sale, pending, settings):
    fresh = services.purchase_create(buyer=user, sale_id=sale.pk, wallet=WALLET, amount=Decimal("1"))
    Purchase.objects.filter(pk=pending.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    assert services.purchase_expire_pending() == 1
    assert Purchase.objects.get(pk=pending.pk).status == "expired"
    assert Purchase.objects.get(pk=fresh.pk).status == "pending"
    assert Sale.objects.get(pk=sale.pk).sold == 2
    assert services.purchase_expire_pending() == 0


def test_expiry__ttl_comes_from_settings(user, sale, settings):
    settings.GOVERNANCE_PURCHASE_PENDING_TTL = 120.0
    purchase = services.purchase_create(buyer=user, sale_id=sale.pk, wallet=WALLET, amount=Decimal("1"))
    assert abs((purchase.expires_at - purchase.created_at).total_seconds() - 120) < 2


def test_expiry__a_new_purchase_reclaims_abandoned_reservations(user, sale, django_user_model):
    # The sale has 100 tokens: one buyer's abandoned checkout must not keep it sold out.
    buyers = [django_user_model.objects.create_user(username=f"b{i}") for i in range(4)]
    for buyer in buyers[:3]:
        services.purchase_create(buyer=buyer, sale_id=sale.pk, wallet=WALLET, amount=Decimal("15"))
    with pytest.raises(Conflict):
        services.purchase_create(buyer=buyers[3], sale_id=sale.pk, wallet=WALLET, amount=Decimal("15"))
    Purchase.objects.filter(buyer=buyers[0]).update(expires_at=timezone.now() - timedelta(seconds=1))
    services.purchase_create(buyer=buyers[3], sale_id=sale.pk, wallet=WALLET, amount=Decimal("15"))
    assert Sale.objects.get(pk=sale.pk).sold == 90
    assert Purchase.objects.get(buyer=buyers[0]).status == "expired"


def test_expiry__late_payment_is_confirmed_while_tokens_are_left_else_409(user, sale, pending, django_user_model):
    Purchase.objects.filter(pk=pending.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    services.purchase_expire_pending()
    assert deliver({"purchase": pending.pk, "status": "paid", "reference": "late_1"}).json()["status"] == "confirmed"
    assert Sale.objects.get(pk=sale.pk).sold == 10
    assert balance(user) == 10

    second = services.purchase_create(buyer=user, sale_id=sale.pk, wallet=WALLET, amount=Decimal("5"))
    Purchase.objects.filter(pk=second.pk).update(expires_at=timezone.now() - timedelta(seconds=1))
    services.purchase_expire_pending()
    rival = django_user_model.objects.create_user(username="rival")
    Sale.objects.filter(pk=sale.pk).update(per_buyer_cap=100)
    services.purchase_create(buyer=rival, sale_id=sale.pk, wallet=WALLET, amount=Decimal("45"))  # 90 of 100
    late = deliver({"purchase": second.pk, "status": "paid", "reference": "late_2"})
    assert (late.status_code, late.json()["error"]) == (409, "purchase_expired")
    assert "refund" in late.json()["detail"]
    assert balance(user) == 10
    assert Sale.objects.get(pk=sale.pk).sold == 100


def test_expiry__the_worker_runs_it_periodically():
    from procrastinate.contrib.django import app

    import governance.tasks  # noqa: F401  (procrastinate autodiscovers it in the worker)

    periodic = {task.periodic_id: task for task in app.periodic_registry.periodic_tasks.values()}
    assert periodic["governance-expire-purchases"].task.name == "governance.expire_purchases"


# --- token account and stakes ------------------------------------------------------------------


def test_stake__without_paid_tokens_is_409_and_gives_no_weight(api_client, user, open_proposal, sale):
    services.purchase_create(buyer=user, sale_id=sale.pk, wallet=WALLET, amount=Decimal("5"))  # unpaid
    response = post(api_client, "/api/stakes/", {"amount": "99999999999999999999", "lock_days": 1})
    assert response.status_code == 409
    body = response.json()
    assert body["error"] == "insufficient_balance"
    assert "Only 0 tokens are available" in body["detail"]
    assert list(body["fields"]) == ["amount"]
    assert not StakingPosition.objects.exists()
    vote = post(api_client, f"/api/proposals/{open_proposal.pk}/votes/", {"choice": "for"})
    assert (vote.status_code, vote.json()["error"]) == (403, "no_stake")
    assert not Vote.objects.exists()


def test_stake__debits_unstake_credits_and_the_ledger_sums_to_the_balance(api_client, user):
    fund(user, 10)
    created = post(api_client, "/api/stakes/", {"amount": "7.5", "lock_days": 1})
    assert created.status_code == 201
    assert api_client.get("/api/balance/").json() == {"available": "2.50000000", "staked": "7.50000000", "pending": "0"}
    over = post(api_client, "/api/stakes/", {"amount": "2.50000001", "lock_days": 1})
    assert over.status_code == 409
    assert "Only 2.50000000 tokens are available" in over.json()["detail"]
    unlock(StakingPosition.objects.get(pk=created.json()["id"]))
    assert post(api_client, f"/api/stakes/{created.json()['id']}/unstake/").status_code == 200
    assert balance(user) == 10
    assert [e.reason for e in LedgerEntry.objects.filter(user=user).order_by("id")] == [
        "purchase_confirmed",
        "stake",
        "unstake",
    ]
    assert_ledger_matches(user)


def test_token_account__the_database_refuses_a_negative_balance(user):
    fund(user, 1)
    with pytest.raises(IntegrityError), transaction.atomic():
        TokenAccount.objects.filter(user=user).update(available=Decimal("-0.00000001"))


def test_balance__requires_authentication(db, client):
    assert client.get("/api/balance/").status_code == 401


@pytest.mark.django_db(transaction=True)
def test_stake__50_concurrent_stakes_from_5_processes_never_overdraw(user, api_token):
    fund(user, 100)

    def stake(_):
        response = Client(headers={"Authorization": f"Bearer {api_token}"}).post(
            "/api/stakes/", {"amount": "7", "lock_days": 1}, content_type="application/json"
        )
        return response.status_code, response.json().get("error")

    results = in_processes(stake, range(50), processes=5)
    assert sorted(code for code, _ in results) == [201] * 14 + [409] * 36  # 14 x 7 = 98 of 100
    assert {error for code, error in results if code == 409} == {"insufficient_balance"}
    assert balance(user) == 2
    assert StakingPosition.objects.filter(owner=user).aggregate(total=Sum("amount"))["total"] == 98
    assert_ledger_matches(user)


@pytest.mark.django_db(transaction=True)
def test_webhook__the_same_payment_delivered_at_once_by_5_processes_credits_once(user, sale, pending):
    raw = json.dumps({"purchase": pending.pk, "status": "paid", "reference": "pay_burst"}).encode()
    headers = webhook_headers(raw)

    def deliver_raw(_):
        response = Client().post(WEBHOOK, raw, content_type="application/json", **headers)
        return response.status_code, response.json().get("changed")

    results = in_processes(deliver_raw, range(20), processes=5)
    assert sorted(results) == [(200, False)] * 19 + [(200, True)]
    assert balance(user) == 10
    assert LedgerEntry.objects.filter(purchase=pending).count() == 1

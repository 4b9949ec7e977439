from datetime import timedelta

import pytest
from django.utils import timezone

from governance.models import Proposal, Purchase, Sale, StakingPosition, Vote
from lifecycle.idempotency.models import IdempotencyRecord
from tests.governance.conftest import WALLET, unlock
from tests.support.tokens import fund

pytestmark = pytest.mark.django_db


def post(client, path, body=None, **headers):
    return client.post(path, body or {}, content_type="application/json", headers=headers)


def window(**kwargs):
    now = timezone.now()
    return {"starts": (now - timedelta(minutes=1)).isoformat(), "ends": (now + timedelta(days=2)).isoformat()}


def test_proposals__staff_creates_opens_closes_executes(staff_client, api_client, user):
    w = window()
    created = post(
        staff_client,
        "/api/proposals/",
        {"title": "T", "description": "D", "voting_starts_at": w["starts"], "voting_ends_at": w["ends"], "quorum": "1"},
    )
    assert created.status_code == 201, created.content
    body = created.json()
    assert {"id", "status", "tally"} <= body.keys()
    assert body["status"] == "draft"
    pid = body["id"]
    assert post(staff_client, f"/api/proposals/{pid}/open/").json()["status"] == "open"
    fund(user, "7.25")
    assert post(api_client, "/api/stakes/", {"amount": "7.25", "lock_days": 30}).status_code == 201
    vote = post(api_client, f"/api/proposals/{pid}/votes/", {"choice": "for"})
    assert vote.status_code == 201
    assert vote.json()["weight"] == "7.25000000"
    assert {"id", "weight"} <= vote.json().keys()
    again = post(api_client, f"/api/proposals/{pid}/votes/", {"choice": "against"})
    assert again.status_code == 409
    assert again.json()["error"] == "already_voted"
    detail = api_client.get(f"/api/proposals/{pid}/").json()
    assert detail["tally"] == {"for": "7.25000000", "against": "0", "abstain": "0"}
    closed = post(staff_client, f"/api/proposals/{pid}/close/")
    assert closed.json()["status"] == "closed"
    assert closed.json()["tally"]["for"] == "7.25000000"
    assert post(staff_client, f"/api/proposals/{pid}/execute/").json()["status"] == "executed"
    second = post(staff_client, f"/api/proposals/{pid}/execute/")
    assert second.status_code == 409
    assert "executed" in second.json()["detail"]
    assert [p["id"] for p in api_client.get("/api/proposals/").json()] == [pid]


def test_proposals__non_staff_cannot_create_or_execute(api_client, open_proposal):
    w = window()
    body = {"title": "T", "voting_starts_at": w["starts"], "voting_ends_at": w["ends"], "quorum": "1"}
    response = post(api_client, "/api/proposals/", body)
    assert response.status_code == 403
    assert response.json()["error"] == "forbidden"
    assert post(api_client, f"/api/proposals/{open_proposal.pk}/execute/").status_code == 403
    assert Proposal.objects.count() == 1


def test_proposals__invalid_input_names_fields(staff_client):
    response = post(staff_client, "/api/proposals/", {"title": "", "voting_starts_at": "yesterday", "quorum": "-1"})
    assert response.status_code == 422
    fields = response.json()["fields"]
    assert {"title", "voting_starts_at", "voting_ends_at", "quorum"} <= fields.keys()
    w = window()
    reversed_window = {"title": "T", "voting_starts_at": w["ends"], "voting_ends_at": w["starts"], "quorum": "0"}
    response = post(staff_client, "/api/proposals/", reversed_window)
    assert response.status_code == 422
    assert list(response.json()["fields"]) == ["voting_ends_at"]
    assert not Proposal.objects.exists()


# Each parses as a datetime in pydantic's lax mode: seconds since 1970, a local time, a date.
NOT_RFC3339 = ["3", 1764000000, "2026-12-01T12:00:00", "2026-12-01", "2026-12-01T12:00Z", "2026-12-01T12:00:00Z\n"]


@pytest.mark.parametrize("value", NOT_RFC3339)
def test_proposals__start_not_an_rfc3339_date_time_is_422(staff_client, value):
    body = {"title": "T", "voting_starts_at": value, "voting_ends_at": window()["ends"], "quorum": "1"}
    response = post(staff_client, "/api/proposals/", body)
    assert response.status_code == 422, response.content
    assert "RFC 3339" in response.json()["fields"]["voting_starts_at"][0]
    assert not Proposal.objects.exists()


@pytest.mark.parametrize("value", NOT_RFC3339)
def test_sales__start_not_an_rfc3339_date_time_is_422(staff_client, value):
    ends = window()["ends"]
    body = {"token_price": "1", "allocation": "10", "per_buyer_cap": "1", "starts_at": value, "ends_at": ends}
    response = post(staff_client, "/api/sales/", body)
    assert response.status_code == 422, response.content
    assert "RFC 3339" in response.json()["fields"]["starts_at"][0]
    assert not Sale.objects.exists()


def test_proposals__offsets_other_than_utc_are_kept(staff_client):
    body = {
        "title": "T",
        "voting_starts_at": "2026-12-01t12:00:00.5+02:00",
        "voting_ends_at": "2026-12-03T12:00:00Z",
        "quorum": "1",
    }
    response = post(staff_client, "/api/proposals/", body)
    assert response.status_code == 201, response.content
    assert Proposal.objects.get().voting_starts_at.isoformat() == "2026-12-01T10:00:00.500000+00:00"


def test_proposals__unknown_is_404(api_client):
    response = api_client.get("/api/proposals/424242/")
    assert response.status_code == 404
    assert response.json()["error"] == "not_found"


def test_votes__no_stake_is_403_with_message(api_client, open_proposal):
    response = post(api_client, f"/api/proposals/{open_proposal.pk}/votes/", {"choice": "for"})
    assert response.status_code == 403
    assert "no active stake" in response.json()["detail"]


def test_votes__bad_choice_is_422_naming_choice(api_client, open_proposal, staked_user):
    response = post(api_client, f"/api/proposals/{open_proposal.pk}/votes/", {"choice": "maybe"})
    assert response.status_code == 422
    assert list(response.json()["fields"]) == ["choice"]
    assert not Vote.objects.exists()


def test_votes__idempotent_retry_returns_the_first_vote(api_client, open_proposal, staked_user):
    path = f"/api/proposals/{open_proposal.pk}/votes/"
    first = post(api_client, path, {"choice": "for"}, **{"Idempotency-Key": "v1"})
    retry = post(api_client, path, {"choice": "for"}, **{"Idempotency-Key": "v1"})
    assert first.status_code == retry.status_code == 201
    assert first.json() == retry.json()
    assert Vote.objects.count() == 1


def test_sales__staff_only_and_listed(staff_client, api_client):
    w = window()
    body = {
        "token_price": "0.25",
        "allocation": "1000",
        "per_buyer_cap": "100",
        "starts_at": w["starts"],
        "ends_at": w["ends"],
    }
    assert post(api_client, "/api/sales/", body).status_code == 403
    created = post(staff_client, "/api/sales/", body)
    assert created.status_code == 201
    listed = api_client.get("/api/sales/").json()
    assert [s["id"] for s in listed] == [created.json()["id"]]
    assert listed[0]["remaining"] == "1000.00000000"


def test_purchases__contract(api_client, sale):
    response = post(api_client, "/api/purchases/", {"sale": sale.pk, "wallet": WALLET, "amount": "2.5"})
    assert response.status_code == 201
    body = response.json()
    assert {"id", "tokens", "status"} <= body.keys()
    assert body["tokens"] == "5.00000000"
    assert body["status"] == "pending"
    assert body["expires_at"] is not None
    assert [p["id"] for p in api_client.get("/api/purchases/").json()] == [body["id"]]


def test_purchases__bad_checksum_is_422_naming_wallet(api_client, sale):
    wrong = WALLET[:-1] + WALLET[-1].swapcase()
    response = post(api_client, "/api/purchases/", {"sale": sale.pk, "wallet": wrong, "amount": "1"})
    assert response.status_code == 422
    assert list(response.json()["fields"]) == ["wallet"]
    assert not Purchase.objects.exists()


def test_purchases__cap_and_sold_out_are_409(api_client, sale):
    assert post(api_client, "/api/purchases/", {"sale": sale.pk, "wallet": WALLET, "amount": "15"}).status_code == 201
    response = post(api_client, "/api/purchases/", {"sale": sale.pk, "wallet": WALLET, "amount": "0.5"})
    assert response.status_code == 409
    assert response.json()["error"] == "cap_reached"
    assert Sale.objects.get().sold == 30


def test_purchases__amount_is_an_exact_decimal_string(api_client, sale):
    response = post(api_client, "/api/purchases/", {"sale": sale.pk, "wallet": WALLET, "amount": "0.1"})
    assert response.json()["tokens"] == "0.20000000"
    # A JSON number is a binary float: refused, with the way to send it instead.
    response = post(api_client, "/api/purchases/", {"sale": sale.pk, "wallet": WALLET, "amount": 0.1})
    assert response.status_code == 422
    assert "decimal string" in response.json()["fields"]["amount"][0]
    response = post(api_client, "/api/purchases/", {"sale": sale.pk, "wallet": WALLET, "amount": "0.000000001"})
    assert response.status_code == 422
    assert "amount" in response.json()["fields"]


def test_purchases__unknown_sale_names_the_field(api_client):
    response = post(api_client, "/api/purchases/", {"sale": 999999, "wallet": WALLET, "amount": "1"})
    assert response.status_code == 422
    assert list(response.json()["fields"]) == ["sale"]


def test_stakes__create_list_unstake(api_client, user):
    fund(user, 3)
    created = post(api_client, "/api/stakes/", {"amount": "3", "lock_days": 14})
    assert created.status_code == 201
    sid = created.json()["id"]
    locked = post(api_client, f"/api/stakes/{sid}/unstake/")
    assert locked.status_code == 409
    assert locked.json()["error"] == "still_locked"
    unlock(StakingPosition.objects.get(pk=sid))
    assert post(api_client, f"/api/stakes/{sid}/unstake/").json()["status"] == "unstaked"
    assert post(api_client, f"/api/stakes/{sid}/unstake/").status_code == 409
    assert api_client.get("/api/stakes/").json()[0]["status"] == "unstaked"


# Each a JSON value pydantic's lax mode would turn into an integer: true -> 1, "30" -> 30.
@pytest.mark.parametrize("lock_days", [0, True, "30", 30.5])
def test_stakes__bad_lock_days_is_422(api_client, lock_days):
    response = post(api_client, "/api/stakes/", {"amount": "3", "lock_days": lock_days})
    assert response.status_code == 422
    assert list(response.json()["fields"]) == ["lock_days"]
    assert not StakingPosition.objects.exists()


def test_purchases__sale_id_as_a_string_is_422(api_client, sale):
    response = post(api_client, "/api/purchases/", {"sale": str(sale.pk), "wallet": WALLET, "amount": "1"})
    assert response.status_code == 422, response.content
    assert list(response.json()["fields"]) == ["sale"]
    assert not Purchase.objects.exists()


def test_idempotency__same_key_different_body_is_422_and_nothing_created(api_client, user):
    fund(user, 10)
    assert (
        post(api_client, "/api/stakes/", {"amount": "3", "lock_days": 14}, **{"Idempotency-Key": "s"}).status_code
        == 201
    )
    response = post(api_client, "/api/stakes/", {"amount": "4", "lock_days": 14}, **{"Idempotency-Key": "s"})
    assert response.status_code == 422
    assert StakingPosition.objects.count() == 1
    assert IdempotencyRecord.objects.count() == 1


def test_unauthenticated__every_endpoint_is_401(db, client):
    for path in ("/api/proposals/", "/api/sales/", "/api/purchases/", "/api/stakes/"):
        assert client.get(path).status_code == 401
        assert client.post(path, {}, content_type="application/json").status_code == 401

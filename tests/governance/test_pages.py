from decimal import Decimal

import pytest
from django.test import Client

from governance.models import Purchase, StakingPosition, Vote
from tests.governance.conftest import WALLET
from tests.support.tokens import fund

pytestmark = pytest.mark.django_db


@pytest.fixture
def browser(user):
    client = Client(enforce_csrf_checks=False)
    client.force_login(user)
    return client


def test_pages__login_required_redirects_to_login(db):
    response = Client().get("/proposals/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/")


def test_login_page__wrong_password_shown_in_words(user):
    response = Client().post("/login/", {"username": "alice", "password": "wrong"})
    assert response.status_code == 200
    assert "Please enter a correct username and password" in response.content.decode()


def test_login_page__logs_in_and_lands_on_proposals(user):
    response = Client().post("/login/", {"username": "alice", "password": "alice-password-1"}, follow=True)
    assert response.redirect_chain[-1][0] == "/proposals/"
    assert "Signed in as alice" in response.content.decode()


def test_proposal_page__vote_without_stake_is_explained(browser, open_proposal):
    response = browser.post(f"/proposals/{open_proposal.pk}/", {"choice": "for"})
    assert response.status_code == 400
    assert "You have no active stake" in response.content.decode()
    assert not Vote.objects.exists()


def test_proposal_page__stake_then_vote_is_counted(browser, open_proposal, user):
    fund(user, "12.5")
    browser.post("/staking/", {"amount": "12.5", "lock_days": "30"})
    response = browser.post(f"/proposals/{open_proposal.pk}/", {"choice": "for"}, follow=True)
    page = response.content.decode()
    assert "Your vote (for, weight 12.5) is counted." in page
    assert '<td id="tally-for">12.5</td>' in page
    assert Vote.objects.get().weight == Decimal("12.5")


def test_proposal_page__missing_choice_is_explained(browser, open_proposal):
    response = browser.post(f"/proposals/{open_proposal.pk}/", {})
    assert response.status_code == 400
    assert "Choice: This field is required." in response.content.decode()


def test_sale_page__bad_wallet_is_explained(browser, sale):
    response = browser.post("/sale/", {"sale": sale.pk, "wallet": "0x12", "amount": "1"})
    assert response.status_code == 400
    assert "0x followed by 40 hexadecimal digits" in response.content.decode()
    assert not Purchase.objects.exists()


def test_sale_page__purchase_reserved_until_paid(browser, sale):
    response = browser.post("/sale/", {"sale": sale.pk, "wallet": WALLET, "amount": "1"}, follow=True)
    purchase = Purchase.objects.get()
    assert f"Purchase {purchase.pk} reserved: 2 tokens" in response.content.decode()
    assert (purchase.tokens, purchase.status) == (2, "pending")


def test_staking_page__stake_beyond_balance_is_explained(browser, user):
    fund(user, 3)
    response = browser.post("/staking/", {"amount": "5", "lock_days": "7"})
    assert response.status_code == 400
    assert "Only 3.00000000 tokens are available" in response.content.decode()
    assert not StakingPosition.objects.exists()


def test_staking_page__unstake_while_locked_is_explained(browser, user):
    fund(user, 1)
    browser.post("/staking/", {"amount": "1", "lock_days": "7"})
    stake = StakingPosition.objects.get()
    response = browser.post(f"/staking/{stake.pk}/unstake/", follow=True)
    assert "is locked until" in response.content.decode()
    stake.refresh_from_db()
    assert stake.status == "active"


def test_staking_page__invalid_amount_is_explained(browser):
    response = browser.post("/staking/", {"amount": "-3", "lock_days": "7"})
    assert response.status_code == 400
    assert "Amount: Ensure this value is greater than or equal to" in response.content.decode()
    assert not StakingPosition.objects.exists()

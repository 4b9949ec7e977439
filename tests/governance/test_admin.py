from decimal import Decimal

import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import ApiToken
from accounts.services import hash_token
from governance import services
from governance.models import LedgerEntry, Proposal, Purchase, Sale, StakingPosition, TokenAccount, Vote
from lifecycle.idempotency.models import IdempotencyRecord
from lifecycle.outbox.models import OutboxEvent
from tests.governance.conftest import WALLET

pytestmark = pytest.mark.django_db

EDITABLE = [Sale, ApiToken, IdempotencyRecord]
READ_ONLY = [Proposal, Vote, Purchase, StakingPosition, TokenAccount, LedgerEntry]


@pytest.fixture
def admin_browser(django_user_model):
    admin = django_user_model.objects.create_superuser(username="root", password="root-password-1")
    client = Client()
    client.force_login(admin)
    return client


def _url(model, view: str, *args) -> str:
    return reverse(f"admin:{model._meta.app_label}_{model._meta.model_name}_{view}", args=args)


@pytest.mark.parametrize("model", EDITABLE, ids=lambda m: m.__name__)
def test_admin__changelist_and_add_pages_render(admin_browser, model, open_proposal, staked_user, sale):
    assert admin_browser.get(_url(model, "changelist")).status_code == 200
    assert admin_browser.get(_url(model, "add")).status_code == 200


@pytest.mark.parametrize("model", READ_ONLY, ids=lambda m: m.__name__)
def test_admin__governance_records_are_read_only(admin_browser, model, open_proposal, staked_user, sale):
    services.vote_cast(voter=staked_user, proposal_id=open_proposal.pk, choice="for")
    assert admin_browser.get(_url(model, "changelist")).status_code == 200
    assert admin_browser.get(_url(model, "add")).status_code == 403
    row = model.objects.first()
    assert row is not None
    # The change page only shows the row (no save button), and a forged POST changes nothing.
    page = admin_browser.get(_url(model, "change", row.pk))
    assert page.status_code == 200
    assert 'name="_save"' not in page.content.decode()
    assert admin_browser.post(_url(model, "change", row.pk), {}).status_code == 403
    assert admin_browser.post(_url(model, "delete", row.pk), {"post": "yes"}).status_code == 403
    assert model.objects.filter(pk=row.pk).exists()


def test_admin__confirm_action_confirms_through_the_service(admin_browser, user, sale):
    purchase = services.purchase_create(buyer=user, sale_id=sale.pk, wallet=WALLET, amount=Decimal("5"))
    response = admin_browser.post(
        _url(Purchase, "changelist"), {"action": "confirm_purchases", "_selected_action": [purchase.pk]}, follow=True
    )
    assert "1 confirmed and credited" in response.content.decode()
    purchase.refresh_from_db()
    assert purchase.status == "confirmed"
    assert purchase.payment_reference == f"manual:{purchase.pk}"
    assert TokenAccount.objects.get(user=user).available == Decimal(10)
    assert OutboxEvent.objects.filter(payload__action="purchase_confirmed", payload__purchase_id=purchase.pk).exists()
    # Again: refused in words, nothing credited twice.
    again = admin_browser.post(
        _url(Purchase, "changelist"), {"action": "confirm_purchases", "_selected_action": [purchase.pk]}, follow=True
    )
    assert "is already confirmed" in again.content.decode()
    assert LedgerEntry.objects.filter(purchase=purchase).count() == 1
    assert TokenAccount.objects.get(user=user).available == Decimal(10)


def test_admin__proposal_actions_call_the_services(admin_browser, staff_user, open_proposal, staked_user):
    services.vote_cast(voter=staked_user, proposal_id=open_proposal.pk, choice="for")
    changelist = _url(Proposal, "changelist")
    admin_browser.post(changelist, {"action": "close_proposals", "_selected_action": [open_proposal.pk]})
    open_proposal.refresh_from_db()
    assert open_proposal.status == "closed"
    assert open_proposal.tally_for == Decimal("25.5")
    assert OutboxEvent.objects.filter(payload__action="proposal_closed").count() == 1
    admin_browser.post(changelist, {"action": "execute_proposals", "_selected_action": [open_proposal.pk]})
    open_proposal.refresh_from_db()
    assert open_proposal.status == "executed"
    # A refusal is shown, not raised: executing twice is refused by the service.
    response = admin_browser.post(
        changelist, {"action": "execute_proposals", "_selected_action": [open_proposal.pk]}, follow=True
    )
    assert "cannot execute" in response.content.decode().lower()


def test_admin__token_added_is_shown_once_and_stored_hashed(admin_browser, user):
    response = admin_browser.post(reverse("admin:accounts_apitoken_add"), {"user": user.pk, "name": "ci"}, follow=True)
    page = response.content.decode()
    token = ApiToken.objects.get(user=user)
    raw = page.split("it is not shown again): ")[1].split("<")[0].strip()
    assert token.key_hash == hash_token(raw)
    assert Client(headers={"Authorization": f"Bearer {raw}"}).get("/api/auth/me").status_code == 200


def test_admin__revoke_action_revokes(admin_browser, user, api_token):
    token = ApiToken.objects.get(user=user)
    admin_browser.post(
        reverse("admin:accounts_apitoken_changelist"), {"action": "revoke", "_selected_action": [token.pk]}
    )
    token.refresh_from_db()
    assert token.revoked_at is not None
    assert Client(headers={"Authorization": f"Bearer {api_token}"}).get("/api/auth/me").status_code == 401

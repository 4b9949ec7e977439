import pytest
from django.test import Client
from django.urls import reverse

from accounts.models import ApiToken
from accounts.services import hash_token
from governance.models import Proposal, Purchase, Sale, StakingPosition, Vote
from lifecycle.idempotency.models import IdempotencyRecord

pytestmark = pytest.mark.django_db

MODELS = [Proposal, Vote, Sale, Purchase, StakingPosition, ApiToken, IdempotencyRecord]


@pytest.fixture
def admin_browser(django_user_model):
    admin = django_user_model.objects.create_superuser(username="root", password="root-password-1")
    client = Client()
    client.force_login(admin)
    return client


@pytest.mark.parametrize("model", MODELS, ids=lambda m: m.__name__)
def test_admin__changelist_and_add_pages_render(admin_browser, model, open_proposal, staked_user, sale):
    opts = model._meta
    assert admin_browser.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_changelist")).status_code == 200
    assert admin_browser.get(reverse(f"admin:{opts.app_label}_{opts.model_name}_add")).status_code == 200


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

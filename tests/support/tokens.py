"""Paid tokens for tests, the way production gets them: a purchase, confirmed by the payment
processor's (signed) verdict, credits the buyer's token account."""

from __future__ import annotations

import itertools
import json
import uuid
from datetime import timedelta
from decimal import Decimal

from django.contrib.auth import get_user_model
from django.utils import timezone

from governance import payments, services
from governance.conf import governance_settings
from governance.models import Purchase, Sale, StakingPosition

_wallets = itertools.count(1)


def _treasury_sale() -> Sale:
    staff, _ = get_user_model().objects.get_or_create(username="treasury", defaults={"is_staff": True})
    now = timezone.now()
    return services.sale_create(
        actor=staff,
        name="test funding",
        token_price=Decimal(1),
        allocation=Decimal(10) ** 19,
        per_buyer_cap=Decimal(10) ** 19,
        starts_at=now - timedelta(hours=1),
        ends_at=now + timedelta(days=1),
    )


def fund(user, tokens: Decimal | int | str) -> Purchase:
    """`user` buys `tokens` and the purchase is confirmed as paid: they become available."""
    purchase = services.purchase_create(
        buyer=user, sale_id=_treasury_sale().pk, wallet=f"0x{next(_wallets):040x}", amount=Decimal(tokens)
    )
    return services.purchase_settle(purchase_id=purchase.pk, paid=True, reference=f"test-{uuid.uuid4()}").purchase


def funded_stake(user, amount: Decimal | int | str, *, lock_days: int = 30) -> StakingPosition:
    """Fund `user` with exactly `amount`, then stake it (voting weight backed by paid tokens)."""
    fund(user, amount)
    return services.stake_create(owner=user, amount=Decimal(amount), lock_days=lock_days)


def webhook_headers(body: dict | bytes, *, secret: str | None = None, timestamp: int | None = None) -> dict:
    """The processor's signature header of `body`, for the Django test client (HTTP_ prefix)."""
    raw = body if isinstance(body, bytes) else json.dumps(body).encode()
    key = governance_settings.PAYMENT_WEBHOOK_SECRET if secret is None else secret
    return {"HTTP_PAYMENT_SIGNATURE": payments.sign(raw, secret=key, timestamp=timestamp)}

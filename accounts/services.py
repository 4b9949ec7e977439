import hashlib
import logging
import secrets
from datetime import timedelta

from django.contrib.auth.models import User
from django.db import DatabaseError, transaction
from django.db.models import Q
from django.utils import timezone

from accounts.conf import accounts_settings
from accounts.models import ApiToken
from core.errors import InvalidInput

logger = logging.getLogger(__name__)

TOKEN_PREFIX = "omk_"


def hash_token(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def api_token_issue(*, user: User, name: str = "", expires_in: timedelta | None = None) -> tuple[ApiToken, str]:
    """Create a token for `user`, valid for `expires_in` (ACCOUNTS_TOKEN_DAYS by default); return
    the row and the raw token (not retrievable later)."""
    lifetime = expires_in if expires_in is not None else timedelta(days=accounts_settings.TOKEN_DAYS)
    if lifetime <= timedelta(0):
        raise InvalidInput.of({"expires_in": "Must be a positive duration."})
    raw = TOKEN_PREFIX + secrets.token_urlsafe(32)
    with transaction.atomic():
        token = ApiToken.objects.create(
            user=user, name=name, prefix=raw[:12], key_hash=hash_token(raw), expires_at=timezone.now() + lifetime
        )
    return token, raw


def api_token_touch(*, token: ApiToken) -> None:
    """Record that `token` was used now, at most once per ACCOUNTS_TOKEN_LAST_USED_RESOLUTION."""
    now = timezone.now()
    stale = now - timedelta(seconds=accounts_settings.TOKEN_LAST_USED_RESOLUTION)
    try:
        # A savepoint inside a caller's transaction: a refused write must not doom the request.
        with transaction.atomic():
            ApiToken.objects.filter(pk=token.pk).filter(
                Q(last_used_at__isnull=True) | Q(last_used_at__lt=stale)
            ).update(last_used_at=now)
    except DatabaseError as exc:
        # Bookkeeping only: a read on a PostgreSQL standby (failover) must still be served, and a
        # database that is really gone fails the request's own queries anyway.
        logger.warning("Could not record the use of token %s: %r", token.prefix, exc)


def api_token_revoke(*, token: ApiToken) -> ApiToken:
    with transaction.atomic():
        ApiToken.objects.filter(pk=token.pk, revoked_at__isnull=True).update(revoked_at=timezone.now())
    token.refresh_from_db()
    return token

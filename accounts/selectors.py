from django.utils import timezone

from accounts.models import ApiToken
from accounts.services import TOKEN_PREFIX, api_token_touch, hash_token


class TokenExpired(Exception):
    def __init__(self, token: ApiToken):
        super().__init__(f"The bearer token expired at {token.expires_at.isoformat()}: issue a new one.")


def api_token_user(*, raw: str):
    """The active user owning the non-revoked, unexpired token `raw`, or None. TokenExpired for
    a token that was valid and expired (the client is told so)."""
    if not raw.startswith(TOKEN_PREFIX) or len(raw) > 200:
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=hash_token(raw), revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    if token is None:
        return None
    if token.expires_at <= timezone.now():
        raise TokenExpired(token)
    api_token_touch(token=token)
    return token.user

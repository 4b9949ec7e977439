from accounts.models import ApiToken
from accounts.services import TOKEN_PREFIX, hash_token


def api_token_user(*, raw: str):
    """The active user owning the non-revoked token `raw`, or None."""
    if not raw.startswith(TOKEN_PREFIX) or len(raw) > 200:
        return None
    token = (
        ApiToken.objects.select_related("user")
        .filter(key_hash=hash_token(raw), revoked_at__isnull=True, user__is_active=True)
        .first()
    )
    return token.user if token else None

from django.conf import settings
from django.db import models


class ApiToken(models.Model):
    """A machine client's bearer token. Only its SHA-256 is stored: the token is shown once.

    A plain (unsalted) SHA-256 is enough here, unlike for passwords: tokens are 256 random bits,
    so there is nothing to brute-force, and the lookup stays one indexed equality per request.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, blank=True)
    # The first characters of the token, to recognise it in the admin without storing it.
    prefix = models.CharField(max_length=12, editable=False)
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    # After this the token is refused (401 saying so): a leaked token stops working by itself.
    expires_at = models.DateTimeField()
    # Updated at most once a minute per token (accounts.selectors.api_token_user).
    last_used_at = models.DateTimeField(null=True, blank=True)
    revoked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        state = "revoked" if self.revoked_at else "active"
        return f"{self.prefix}… ({self.user}, {state})"

    @property
    def is_active(self) -> bool:
        from django.utils import timezone

        return self.revoked_at is None and self.expires_at > timezone.now()

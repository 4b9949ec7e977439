"""Accounts settings: `accounts_settings.X` reads `settings.ACCOUNTS_X`, else the default here."""

from core.conf import AppSettings


class AccountsSettings(AppSettings):
    prefix = "ACCOUNTS_"
    # Days a new API token is valid when `issue_token --expires-in` is not given.
    TOKEN_DAYS: int = 90
    # Seconds between two writes of a token's last_used_at (not one UPDATE per request).
    TOKEN_LAST_USED_RESOLUTION: int = 60


accounts_settings = AccountsSettings()

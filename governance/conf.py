"""Governance settings: `governance_settings.X` reads `settings.GOVERNANCE_X`, else the default here."""

from core.conf import AppSettings


class GovernanceSettings(AppSettings):
    prefix = "GOVERNANCE_"
    # Longest staking lock period a position may ask for, in days.
    MAX_LOCK_DAYS: int = 3650
    # Seconds a pending purchase holds its tokens of the allocation while the buyer pays; then
    # the worker expires it and gives them back to the sale.
    PURCHASE_PENDING_TTL: float = 3600.0
    # The payment processor's webhook signing secret (HMAC-SHA256). Empty: every webhook is
    # refused. settings.production refuses to start without it.
    PAYMENT_WEBHOOK_SECRET: str = ""
    # A webhook whose signed timestamp is further than this from now (seconds, either way) is
    # refused: a captured delivery cannot be replayed later.
    PAYMENT_WEBHOOK_TOLERANCE: int = 300


governance_settings = GovernanceSettings()

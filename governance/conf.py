"""Governance settings: `governance_settings.X` reads `settings.GOVERNANCE_X`, else the default here."""

from core.conf import AppSettings


class GovernanceSettings(AppSettings):
    prefix = "GOVERNANCE_"
    # Longest staking lock period a position may ask for, in days.
    MAX_LOCK_DAYS: int = 3650


governance_settings = GovernanceSettings()

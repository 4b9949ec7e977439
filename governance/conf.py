"""Governance settings, each with its default (read through `governance_settings`)."""

from typing import Any

from django.conf import settings

DEFAULTS: dict[str, Any] = {
    # Longest staking lock period a position may ask for, in days.
    "MAX_LOCK_DAYS": 3650,
}


class GovernanceSettings:
    def __getattr__(self, name: str) -> Any:
        if name not in DEFAULTS:
            raise AttributeError(name)
        return getattr(settings, f"GOVERNANCE_{name}", DEFAULTS[name])


governance_settings = GovernanceSettings()

"""System checks with stable ids: bad governance or API configuration is caught at start."""

from django.core.checks import Error, Tags, register

from core.conf import core_settings
from governance.conf import governance_settings

# EIP-55's own test vector: a Keccak that is not Keccak-256 (e.g. SHA3-256) would accept typos.
_EIP55_VECTOR = "0x5aAeb6053F3E94C9b9A09f33669435E7Ef1BeAed"


@register(Tags.compatibility)
def check_wallet_checksum(app_configs, **kwargs):
    try:
        from governance.wallets import to_checksum_address

        ok = to_checksum_address(_EIP55_VECTOR.lower()) == _EIP55_VECTOR
    except ImportError as exc:
        return [Error(f"Keccak-256 is unavailable: {exc}", id="governance.E001", hint="pip install pycryptodome")]
    if not ok:
        return [Error("The EIP-55 checksum does not match its test vector.", id="governance.E001")]
    return []


@register(Tags.compatibility)
def check_limits(app_configs, **kwargs):
    errors = []
    body = core_settings.raw("API_MAX_BODY_BYTES")
    if not isinstance(body, int) or body <= 0:
        errors.append(Error(f"OMK_API_MAX_BODY_BYTES must be a positive integer, got {body!r}.", id="governance.E002"))
    days = governance_settings.raw("MAX_LOCK_DAYS")
    if not isinstance(days, int) or days < 1:
        errors.append(
            Error(f"GOVERNANCE_MAX_LOCK_DAYS must be a whole number of days >= 1, got {days!r}.", id="governance.E003")
        )
    return errors

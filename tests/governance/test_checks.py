from governance.checks import check_limits, check_wallet_checksum


def test_check_wallet_checksum__passes_with_keccak():
    assert check_wallet_checksum(None) == []


def test_check_limits__bad_values_have_stable_ids(settings):
    assert check_limits(None) == []
    settings.OMK_API_MAX_BODY_BYTES = 0
    settings.GOVERNANCE_MAX_LOCK_DAYS = "30"
    assert [error.id for error in check_limits(None)] == ["governance.E002", "governance.E003"]

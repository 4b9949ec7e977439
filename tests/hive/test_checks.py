from hive.checks import check_hive_settings


def test_check_hive_settings__defaults_pass():
    assert check_hive_settings(None) == []


def test_check_hive_settings__claim_block_beyond_redis_socket_timeout(settings):
    settings.LIFECYCLE_QUEUE_MAX_BLOCK_MS = 5000
    assert [e.id for e in check_hive_settings(None)] == ["hive.E001"]


def test_check_hive_settings__non_positive_ttls(settings):
    settings.HIVE_BOARD_TTL_SECONDS = 0
    settings.LIFECYCLE_QUEUE_VISIBILITY_TIMEOUT_SECONDS = -1
    assert [e.id for e in check_hive_settings(None)] == ["hive.E002", "hive.E002"]

from hive.checks import check_hive_settings


def test_check_hive_settings__defaults_pass():
    assert check_hive_settings(None) == []


def test_check_hive_settings__non_positive_ttls(settings):
    settings.HIVE_BOARD_TTL_SECONDS = 0
    settings.HIVE_HOT_HISTORY_TTL_SECONDS = -1
    assert [e.id for e in check_hive_settings(None)] == ["hive.E001", "hive.E001"]

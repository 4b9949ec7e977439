from hive.checks import check_hive_settings


def test_check_hive_settings__defaults_pass():
    assert check_hive_settings(None) == []


def test_check_hive_settings__non_positive_ttls(settings):
    settings.HIVE_BOARD_TTL_SECONDS = 0
    settings.HIVE_HOT_HISTORY_TTL_SECONDS = -1
    assert [e.id for e in check_hive_settings(None)] == ["hive.E001", "hive.E001"]


def test_check_queen_backend__an_unusable_path_is_an_error(settings):
    from hive.checks import check_queen_backend

    assert check_queen_backend(None) == []
    settings.QUEEN_LLM_BACKEND = "hive.llm.NoSuchBackend"
    assert [e.id for e in check_queen_backend(None)] == ["hive.E002"]
    settings.QUEEN_LLM_BACKEND = "hive.conf.HiveSettings"
    assert [e.id for e in check_queen_backend(None)] == ["hive.E002"]

from lifecycle.queues.checks import check_queue_settings


def test_check_queue_settings__defaults_pass():
    assert check_queue_settings(None) == []


def test_check_queue_settings__claim_block_beyond_redis_socket_timeout(settings):
    settings.QUEUES_MAX_BLOCK_MS = 5000
    assert [e.id for e in check_queue_settings(None)] == ["queues.E001"]


def test_check_queue_settings__non_positive_durations(settings):
    settings.QUEUES_VISIBILITY_TIMEOUT_SECONDS = -1
    settings.QUEUES_RETENTION_SECONDS = 0
    assert [e.id for e in check_queue_settings(None)] == ["queues.E002", "queues.E002"]

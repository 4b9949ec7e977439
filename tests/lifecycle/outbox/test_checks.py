from lifecycle.outbox.checks import check_outbox_numbers, check_outbox_sink


def test_check_outbox_sink__default_bigquery_sink_passes():
    assert check_outbox_sink(None) == []


def test_check_outbox_sink__unimportable_path_is_e020(settings):
    settings.OUTBOX_SINK = "lifecycle.outbox.sinks.nowhere.Sink"

    assert [e.id for e in check_outbox_sink(None)] == ["outbox.E001"]


def test_check_outbox_sink__not_a_sink_is_e021(settings):
    settings.OUTBOX_SINK = "lifecycle.outbox.models.OutboxEvent"

    assert [e.id for e in check_outbox_sink(None)] == ["outbox.E002"]


def test_check_outbox_numbers__zero_retention_is_e022(settings):
    settings.OUTBOX_RETENTION_DAYS = 0

    errors = check_outbox_numbers(None)

    assert [e.id for e in errors] == ["outbox.E003"]
    assert "OUTBOX_RETENTION_DAYS" in errors[0].msg

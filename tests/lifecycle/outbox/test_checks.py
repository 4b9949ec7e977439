from lifecycle.outbox.checks import check_outbox_bigquery, check_outbox_numbers, check_outbox_sink


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


def test_check_outbox_bigquery__test_settings_pass():
    assert check_outbox_bigquery(None) == []


def test_check_outbox_bigquery__a_column_type_the_exporter_cannot_write_is_e004(settings):
    settings.OUTBOX_BIGQUERY_COLUMNS = {"bee_decisions": [("confidence", "FLOAT64"), ("where", "GEOGRAPHY")]}

    errors = check_outbox_bigquery(None)

    assert [e.id for e in errors] == ["outbox.E004"]
    assert "'where'" in errors[0].msg


def test_check_outbox_bigquery__emulator_without_its_grpc_port_is_e005(settings):
    settings.OUTBOX_BIGQUERY_EMULATOR_GRPC = ""

    assert [e.id for e in check_outbox_bigquery(None)] == ["outbox.E005"]

"""System checks for the outbox (ids outbox.E001-E005)."""

from django.core.checks import Error, Tags, register
from django.utils.module_loading import import_string

from lifecycle.outbox.conf import outbox_settings


@register(Tags.compatibility)
def check_outbox_sink(app_configs, **kwargs):
    from lifecycle.outbox.sinks import OutboxSink

    path = outbox_settings.SINK
    try:
        sink_class = import_string(path)
    except ImportError as exc:
        return [
            Error(
                f"OUTBOX_SINK {path!r} cannot be imported ({exc}).",
                id="outbox.E001",
                hint="Set OUTBOX_SINK to the dotted path of an OutboxSink subclass.",
            )
        ]
    if not (isinstance(sink_class, type) and issubclass(sink_class, OutboxSink)):
        return [
            Error(
                f"OUTBOX_SINK {path!r} is not a subclass of lifecycle.outbox.sinks.OutboxSink.",
                id="outbox.E002",
            )
        ]
    return []


@register(Tags.compatibility)
def check_outbox_numbers(app_configs, **kwargs):
    errors = []
    for name in ("BATCH_SIZE", "RETENTION_DAYS", "BIGQUERY_PARTITION_EXPIRATION_DAYS"):
        value = outbox_settings.raw(name)
        if not isinstance(value, int) or value < 1:
            errors.append(Error(f"OUTBOX_{name} must be a whole number >= 1, got {value!r}.", id="outbox.E003"))
    return errors


@register(Tags.compatibility)
def check_outbox_bigquery(app_configs, **kwargs):
    from lifecycle.outbox.sinks.protorows import TYPES

    errors = []
    columns = outbox_settings.raw("BIGQUERY_COLUMNS")
    typed = (
        [(table, *column) for table, listed in columns.items() for column in listed]
        if isinstance(columns, dict)
        else []
    )
    for table, name, type_ in typed:
        if str(type_).upper() not in TYPES:
            errors.append(
                Error(
                    f"OUTBOX_BIGQUERY_COLUMNS[{table!r}]: column {name!r} has type {type_!r}, which the "
                    "exporter does not write.",
                    id="outbox.E004",
                    hint=f"Use one of {', '.join(sorted(TYPES))}.",
                )
            )
    if outbox_settings.raw("BIGQUERY_EMULATOR_URL") and not outbox_settings.raw("BIGQUERY_EMULATOR_GRPC"):
        errors.append(
            Error(
                "OUTBOX_BIGQUERY_EMULATOR_URL is set without OUTBOX_BIGQUERY_EMULATOR_GRPC: the exporter writes "
                "through the Storage Write API, which is the emulator's gRPC port.",
                id="outbox.E005",
                hint="Set BIGQUERY_EMULATOR_GRPC to the emulator's gRPC host:port (127.0.0.1:9060 for `make run`).",
            )
        )
    return errors

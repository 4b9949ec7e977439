"""System checks for the outbox (ids outbox.E001-E003)."""

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

"""The durable analytics outbox: events written with the change that caused them, exported to
BigQuery exactly once.

    from lifecycle.outbox import record_event
    record_event(kind="bee_decision", payload={...})   # inside the request's transaction

The functions are imported on first use, so importing this package never loads models (or
google-cloud-bigquery) before Django's app registry is ready.
"""

from __future__ import annotations

import uuid

__all__ = ["outbox_export", "outbox_export_loop", "record_event"]


def record_event(*, kind: str, payload: dict) -> uuid.UUID:
    from lifecycle.outbox.services import record_event as _record_event

    return _record_event(kind=kind, payload=payload)


def outbox_export(*, max_seconds: float, batch_size: int = 500) -> int:
    from lifecycle.outbox.exporter import outbox_export as _outbox_export

    return _outbox_export(max_seconds=max_seconds, batch_size=batch_size)


def outbox_export_loop(**kwargs) -> None:
    from lifecycle.outbox.exporter import outbox_export_loop as _outbox_export_loop

    _outbox_export_loop(**kwargs)

"""Where the exporter sends events. The sink is chosen by `OUTBOX_SINK` (a dotted path)."""

from __future__ import annotations

import abc
import dataclasses
import datetime as dt
import uuid
from collections.abc import Sequence


@dataclasses.dataclass(frozen=True, slots=True)
class Event:
    event_id: uuid.UUID
    kind: str
    table: str
    payload: dict
    created_at: dt.datetime


class SinkError(Exception):
    """The whole batch failed for a reason that may pass (network, quota, 5xx): retry it later."""


class RowsRejected(Exception):
    """The sink refused the batch because of its content (the rows, not the connection).

    `errors` maps the event ids the sink named as bad to its message; it may be empty when the
    sink did not say which rows: the exporter then narrows the batch down itself.
    """

    def __init__(self, message: str, errors: dict[uuid.UUID, str] | None = None):
        super().__init__(message)
        self.errors = errors or {}


class OutboxSink(abc.ABC):
    """What a sink (OUTBOX_SINK, a dotted path) must provide. `send` must be idempotent per
    event id: a batch may be sent again (after a crash between the send and the marking of the
    rows) and must not appear twice."""

    @abc.abstractmethod
    def send(self, events: Sequence[Event], *, timeout: float | None = None) -> None:
        """Deliver the events, within `timeout` seconds when given, or raise SinkError/RowsRejected."""

    def setup(self) -> list[str]:
        """Create what the sink needs (idempotent); return a line per thing done."""
        return []

    def close(self) -> None:
        """Optional: most sinks hold nothing to close."""
        return None

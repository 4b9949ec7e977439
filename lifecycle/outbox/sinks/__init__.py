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


@dataclasses.dataclass(frozen=True, slots=True)
class Staged:
    """Events a sink holds ready but not yet visible, under a token the exporter records in
    PostgreSQL before it makes them visible (`commit`), so a crash in between is recoverable."""

    token: str
    event_ids: tuple[uuid.UUID, ...]


class OutboxSink(abc.ABC):
    """What a sink (OUTBOX_SINK, a dotted path) must provide.

    The exporter writes in two phases: `stage` (nothing visible yet), the tokens recorded with the
    rows in PostgreSQL, `commit` (visible), the rows marked exported. A sink that can only `send`
    (visible at once) gets that protocol from the defaults here; its `send` must then be
    idempotent per event id, since a batch may be sent again after a crash before the recording.
    """

    @abc.abstractmethod
    def send(self, events: Sequence[Event], *, timeout: float | None = None) -> None:
        """Deliver the events, within `timeout` seconds when given, or raise SinkError/RowsRejected."""

    def stage(self, events: Sequence[Event], *, timeout: float | None = None) -> list[Staged]:
        """Make the events ready to commit; raise SinkError/RowsRejected (then nothing of them
        ever becomes visible). The default sends them: visible already, nothing left to commit."""
        self.send(events, timeout=timeout)
        return [Staged(token=f"sent:{uuid.uuid4().hex}", event_ids=tuple(event.event_id for event in events))]

    def commit(self, tokens: Sequence[str], *, timeout: float | None = None) -> dict[str, str]:
        """Make staged tokens visible; committing one already committed is a success. Returns the
        tokens that could not be committed, each with the reason (empty: all are visible)."""
        return {}

    def recover(self, token: str, events: Sequence[Event], *, timeout: float | None = None) -> set[uuid.UUID]:
        """After a crash between recording and marking: commit the token if it still can be, and
        return which of its events are visible. The others are sent again. Raise SinkError when
        it cannot be told now (asked again later)."""
        return {event.event_id for event in events}

    def setup(self) -> list[str]:
        """Create what the sink needs (idempotent); return a line per thing done."""
        return []

    def close(self) -> None:
        """Optional: most sinks hold nothing to close."""
        return None

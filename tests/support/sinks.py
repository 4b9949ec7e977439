"""Outbox sinks for the tests: event ids into a Redis set (idempotent per id)."""

from collections.abc import Sequence

from core.redis import redis_client
from lifecycle.outbox.sinks import Event, OutboxSink, RowsRejected

SINK_KEY = "tests:outbox-sink"


class RedisSetSink(OutboxSink):
    def send(self, events: Sequence[Event], *, timeout: float | None = None) -> None:
        if events:
            redis_client().sadd(SINK_KEY, *(str(e.event_id) for e in events))


class QuietRejectingSink(RedisSetSink):
    """Refuses any batch holding an event whose payload has `"reject": true`, without saying
    which (as a sink may): the exporter has to narrow the batch down itself."""

    sends = 0

    def send(self, events: Sequence[Event], *, timeout: float | None = None) -> None:
        type(self).sends += 1
        if any(event.payload.get("reject") for event in events):
            raise RowsRejected("the batch holds a bad row")
        super().send(events, timeout=timeout)

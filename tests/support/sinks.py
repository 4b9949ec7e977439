"""An outbox sink for the lifecycle tests: event ids into a Redis set (idempotent per id)."""

from collections.abc import Sequence

from core.redis import redis_client
from lifecycle.outbox.sinks import Event, OutboxSink

SINK_KEY = "tests:outbox-sink"


class RedisSetSink(OutboxSink):
    def send(self, events: Sequence[Event], *, timeout: float | None = None) -> None:
        if events:
            redis_client().sadd(SINK_KEY, *(str(e.event_id) for e in events))

from prometheus_client import REGISTRY

from lifecycle.queues.services import queue_ack, queue_claim, queue_publish


def _count(event: str) -> float:
    return REGISTRY.get_sample_value("queue_messages_total", {"event": event}) or 0.0


def test_queue_messages__counts_publish_claim_redelivery_and_ack(settings):
    settings.QUEUES_VISIBILITY_TIMEOUT_SECONDS = 0.0
    before = {event: _count(event) for event in ("published", "claimed", "redelivered", "acked")}
    ids = [queue_publish(name="metered", body=str(n)) for n in range(3)]
    queue_claim(name="metered", consumer="a", count=3)
    taken_over = queue_claim(name="metered", consumer="b", count=3)
    queue_ack(name="metered", ids=[m.id for m in taken_over] + ids, consumer="b")
    after = {event: _count(event) - before[event] for event in before}
    assert after == {"published": 3, "claimed": 3, "redelivered": 3, "acked": 3}

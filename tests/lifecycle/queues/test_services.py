"""Bee message queues on Redis streams: claim, visibility timeout, ack once, trimming, recovery."""

import multiprocessing
import os
import signal
import time

import pytest

from core.redis import redis_client
from lifecycle.queues.services import (
    InvalidQueueName,
    QueueInputError,
    queue_ack,
    queue_claim,
    queue_delete,
    queue_grouped_names,
    queue_names,
    queue_publish,
    queue_reclaim_stale,
    queue_release,
    queue_release_claimed,
)


@pytest.fixture
def short_visibility(settings):
    # Long enough that a loaded CI machine does the "not yet" checks inside it.
    settings.QUEUES_VISIBILITY_TIMEOUT_SECONDS = 1.0
    return 1.0


def test_queue__publish_claim_ack_round_trip():
    ids = [queue_publish(name="pollen", body=f"m{n}") for n in range(3)]
    messages = queue_claim(name="pollen", consumer="worker-1", count=10)
    assert [m.id for m in messages] == ids
    assert [m.body for m in messages] == ["m0", "m1", "m2"]
    assert not any(m.redelivered for m in messages)
    result = queue_ack(name="pollen", ids=ids, consumer="worker-1")
    assert result.acked == ids
    assert result.not_pending == []
    assert queue_claim(name="pollen", consumer="worker-2", count=10) == []


def test_queue__claimed_message_is_not_given_to_another_consumer_before_the_timeout():
    queue_publish(name="pollen", body="x")
    assert len(queue_claim(name="pollen", consumer="a", count=5)) == 1
    assert queue_claim(name="pollen", consumer="b", count=5) == []


def test_queue__message_acked_at_most_once():
    message_id = queue_publish(name="pollen", body="x")
    queue_claim(name="pollen", consumer="a")
    assert queue_ack(name="pollen", ids=[message_id], consumer="a").acked == [message_id]
    second = queue_ack(name="pollen", ids=[message_id], consumer="a")
    assert second.acked == []
    assert second.not_pending == [message_id]


def test_queue_ack__same_dedupe_answers_the_first_result_and_acks_nothing_more():
    first_id, second_id = (queue_publish(name="pollen", body=b) for b in ("x", "y"))
    queue_claim(name="pollen", consumer="a", count=2)
    assert queue_ack(name="pollen", ids=[first_id], consumer="a", dedupe="1:k").acked == [first_id]
    # The same request resent (its reply lost): the first answer, not "not pending".
    again = queue_ack(name="pollen", ids=[first_id], consumer="a", dedupe="1:k")
    assert (again.acked, again.not_pending) == ([first_id], [])
    # Another request is its own ack: already acked is not pending; the other id still held.
    assert queue_ack(name="pollen", ids=[first_id], consumer="a").not_pending == [first_id]
    assert redis_client().xpending("omk:queue:pollen", "bees")["pending"] == 1
    assert queue_ack(name="pollen", ids=[second_id], consumer="a", dedupe="1:other").acked == [second_id]


def test_queue__ack_with_consumer_refuses_a_message_taken_over(short_visibility):
    message_id = queue_publish(name="pollen", body="x")
    queue_claim(name="pollen", consumer="slow")
    time.sleep(short_visibility + 0.1)
    assert [m.id for m in queue_claim(name="pollen", consumer="fast")] == [message_id]
    assert queue_ack(name="pollen", ids=[message_id], consumer="slow").acked == []
    assert queue_ack(name="pollen", ids=[message_id], consumer="fast").acked == [message_id]


def _claim_then_hang(queue: str, ready) -> None:
    queue_claim(name=queue, consumer="doomed", count=50)
    ready.set()
    time.sleep(60)


def test_queue__killed_consumer_messages_go_to_another_after_visibility_timeout(short_visibility):
    published = [queue_publish(name="nectar", body=str(n)) for n in range(20)]
    context = multiprocessing.get_context("fork")
    ready = context.Event()
    consumer = context.Process(target=_claim_then_hang, args=("nectar", ready))
    consumer.start()
    assert ready.wait(20)
    os.kill(consumer.pid, signal.SIGKILL)
    consumer.join(10)

    # Still inside the visibility timeout: the dead consumer's messages are not handed out yet.
    assert queue_claim(name="nectar", consumer="survivor", count=50) == []
    time.sleep(short_visibility + 0.1)
    taken = queue_claim(name="nectar", consumer="survivor", count=50)
    assert sorted(m.id for m in taken) == sorted(published)
    assert all(m.redelivered for m in taken)
    first = queue_ack(name="nectar", ids=[m.id for m in taken], consumer="survivor")
    assert sorted(first.acked) == sorted(published)
    again = queue_ack(name="nectar", ids=published, consumer="survivor")
    assert again.acked == []
    assert redis_client().xpending("omk:queue:nectar", "bees")["pending"] == 0


def test_queue__messages_older_than_retention_are_trimmed(settings):
    settings.QUEUES_RETENTION_SECONDS = 0.5
    old = queue_publish(name="wax", body="old")
    queue_claim(name="wax", consumer="a")
    queue_publish(name="wax", body="old-unclaimed")
    time.sleep(0.7)
    fresh = queue_publish(name="wax", body="fresh")
    assert redis_client().xlen("omk:queue:wax") == 1
    settings.QUEUES_VISIBILITY_TIMEOUT_SECONDS = 0
    assert [m.id for m in queue_claim(name="wax", consumer="b", count=10)] == [fresh]
    assert queue_ack(name="wax", ids=[old], consumer="a").acked == []


def test_queue__trimmed_on_claim_without_new_publishes(settings):
    settings.QUEUES_RETENTION_SECONDS = 0.3
    queue_publish(name="wax", body="old")
    time.sleep(0.5)
    assert queue_claim(name="wax", consumer="a", count=10) == []
    assert redis_client().xlen("omk:queue:wax") == 0


def test_queue_reclaim_stale__puts_held_messages_back(settings):
    held = queue_publish(name="comb", body="held")
    fresh_hold = queue_publish(name="comb", body="fresh")
    queue_claim(name="comb", consumer="dead", count=1)
    time.sleep(1.2)
    queue_claim(name="comb", consumer="alive", count=1)  # claimed just now: must be left alone

    settings.QUEUES_VISIBILITY_TIMEOUT_SECONDS = 1.0
    assert queue_reclaim_stale(deadline=time.monotonic() + 5) == 1
    again = queue_claim(name="comb", consumer="next", count=10)
    assert [(m.body, m.requeued_from, m.redelivered) for m in again] == [("held", held, False)]
    # The dead consumer's late ack of the old id does nothing: the copy is acked once, by its owner.
    assert queue_ack(name="comb", ids=[held], consumer="dead").acked == []
    assert queue_ack(name="comb", ids=[again[0].id], consumer="next").acked == [again[0].id]
    assert queue_ack(name="comb", ids=[fresh_hold], consumer="alive").acked == [fresh_hold]


def test_queue_grouped_names__read_from_their_index_after_one_scan():
    queue_publish(name="published-only", body="x")
    queue_grouped_names()  # the first call indexes what a SCAN finds (nothing grouped yet)
    queue_publish(name="read", body="x")
    queue_claim(name="read", consumer="c")
    assert queue_grouped_names() == ["published-only", "read"]
    # Listed from the index: a grouped stream the index does not hold is not found.
    redis_client().srem("omk:queue::grouped", "omk:queue:read")
    assert queue_grouped_names() == ["published-only"]


def test_queue_reclaim_stale__finds_streams_grouped_before_the_index(settings):
    queue_publish(name="old", body="held")
    queue_claim(name="old", consumer="dead")
    # As a Redis written before the index existed (or that lost it) holds it.
    redis_client().delete("omk:queue::grouped", "omk:queue::grouped-complete")
    settings.QUEUES_VISIBILITY_TIMEOUT_SECONDS = 0
    assert queue_reclaim_stale(deadline=time.monotonic() + 5) == 1
    assert queue_grouped_names() == ["old"]


def test_queue_reclaim_stale__a_stream_gone_leaves_the_index(settings):
    for name in ("gone", "kept"):
        queue_publish(name=name, body="x")
        queue_claim(name=name, consumer="c")
    redis_client().delete("omk:queue:gone")  # expired
    assert queue_reclaim_stale(deadline=time.monotonic() + 5) == 0
    assert queue_grouped_names() == ["kept"]
    queue_delete(name="kept")
    assert queue_grouped_names() == []


def test_queue_release__hands_back_a_consumers_messages_at_once():
    queue_publish(name="comb", body="a")
    queue_publish(name="comb", body="b")
    queue_claim(name="comb", consumer="stopping", count=2)
    assert queue_release(name="comb", consumer="stopping") == 2
    assert sorted(m.body for m in queue_claim(name="comb", consumer="other", count=5)) == ["a", "b"]


def test_queue__survives_redis_losing_the_group():
    queue_publish(name="comb", body="a")
    redis_client().xgroup_destroy("omk:queue:comb", "bees")
    assert [m.body for m in queue_claim(name="comb", consumer="c")] == ["a"]


def test_queue_names__lists_streams_only():
    queue_publish(name="one", body="x")
    queue_publish(name="two.b", body="x")
    redis_client().set("omk:queue:not-a-stream", "x")
    assert queue_names() == ["one", "two.b"]


@pytest.mark.parametrize("name", ["", "a b", "a:b", "a*", "-lead", "x" * 65, "ü", "a/b"])
def test_queue__bad_names_are_refused(name):
    with pytest.raises(InvalidQueueName):
        queue_publish(name=name, body="x")


def test_queue__bad_claim_and_ack_arguments_are_refused():
    with pytest.raises(QueueInputError, match="count"):
        queue_claim(name="q", consumer="c", count=0)
    with pytest.raises(QueueInputError, match="block_ms"):
        queue_claim(name="q", consumer="c", block_ms=10**6)
    with pytest.raises(InvalidQueueName, match="consumer"):
        queue_claim(name="q", consumer="bad consumer")
    with pytest.raises(QueueInputError, match="ids"):
        queue_ack(name="q", ids=["not-an-id"], consumer="c")
    with pytest.raises(QueueInputError, match="ids"):
        queue_ack(name="q", ids=[], consumer="c")


def test_queue__claim_blocks_until_timeout_when_empty():
    started = time.monotonic()
    assert queue_claim(name="idle", consumer="c", block_ms=300) == []
    assert time.monotonic() - started >= 0.25


def test_queue_release_claimed__hands_back_only_in_process_consumers():
    queue_publish(name="comb", body="local")
    queue_publish(name="comb", body="remote")
    queue_claim(name="comb", consumer="worker-in-this-process", in_process=True)
    queue_claim(name="comb", consumer="remote-bee")
    assert queue_release_claimed(deadline=time.monotonic() + 5) == 1
    assert [m.body for m in queue_claim(name="comb", consumer="next", count=5)] == ["local"]
    assert queue_release_claimed() == 0

"""The Queen's replies with real worker processes: a reply survives the SIGKILL and the SIGTERM
of the worker generating it, and each user turn gets exactly one reply, in order."""

import signal
import threading
import time

import pytest
from django.db import close_old_connections
from procrastinate.contrib.django.models import ProcrastinateJob

from hive.models import Conversation, Reply, Turn
from hive.services import turn_append
from lifecycle.models import Instance, LifecycleReport
from tests.support.workers import wait_for

pytestmark = [pytest.mark.slow, pytest.mark.django_db(transaction=True)]

# Heartbeats every second, lost after 3 s without one (the stalled-job window is 3 s too).
FAST_REGISTRY = {"INSTANCE_HEARTBEAT_INTERVAL": "1", "INSTANCE_HEARTBEAT_TTL": "3"}
GENERATION = 2.0
# Analytics events go to Redis, not to a BigQuery emulator this test does not start.
SINK = {"OUTBOX_SINK": "tests.support.sinks.RedisSetSink"}


def _ready(worker) -> bool:
    return Instance.objects.filter(pid=worker.pid, kind="worker", state="ready").exists()


def _started(worker):
    wait_for(lambda: _ready(worker), timeout=30, message=f"worker {worker.pid} ready")
    return worker


def _generating(reply: Reply) -> ProcrastinateJob:
    return wait_for(
        lambda: ProcrastinateJob.objects.filter(id=reply.job_id, status="doing").first(),
        timeout=15,
        message="reply job running",
    )


def _replied(reply: Reply, *, timeout: float) -> Reply:
    return wait_for(
        lambda: Reply.objects.filter(pk=reply.pk, status="done").select_related("turn").first(),
        timeout=timeout,
        message="reply done",
    )


def _assistant_turns_per_user_turn(conversation) -> dict[int, int]:
    users = Turn.objects.filter(conversation=conversation, role="user")
    return {u.seq: Turn.objects.filter(answers=u, role="assistant").count() for u in users}


def test_reply__arrives_after_the_generating_worker_is_sigkilled(user, start_worker):
    conversation = Conversation.objects.create(owner=user)
    # The victim's generation outlasts the test: it is killed in the middle of it.
    victim = _started(start_worker(QUEEN_LOCAL_DELAY="60", **FAST_REGISTRY, **SINK))
    turn = turn_append(conversation_id=conversation.id, user=user, role="user", content="Are you there?")
    _generating(turn.reply)
    _started(start_worker(QUEEN_LOCAL_DELAY=str(GENERATION), **FAST_REGISTRY, **SINK))
    assert Reply.objects.get(pk=turn.reply.pk).status == "pending"
    victim.kill()
    killed_at = time.monotonic()

    # The stalled-job window, a recovery pass (every 5 s), the polling interval, the generation.
    reply = _replied(turn.reply, timeout=3 + 5 + 1 + GENERATION + 5)
    assert time.monotonic() - killed_at < 3 + 5 + 1 + GENERATION + 5
    assert reply.turn.seq == 2
    assert _assistant_turns_per_user_turn(conversation) == {1: 1}
    assert ProcrastinateJob.objects.get(id=turn.reply.job_id).status == "succeeded"


def test_reply__sigterm_hands_the_generation_back_at_once_and_it_finishes_elsewhere(user, start_worker):
    budget = {"KUBERNETES_SERVICE_HOST": "10.0.0.1", "TERMINATION_GRACE_PERIOD": "8"}
    conversation = Conversation.objects.create(owner=user)
    stopping = _started(start_worker(QUEEN_LOCAL_DELAY="60", **budget, **SINK))
    turn = turn_append(conversation_id=conversation.id, user=user, role="user", content="Still there?")
    _generating(turn.reply)

    sent = time.monotonic()
    stopping.signal(signal.SIGTERM)
    assert stopping.wait(timeout=10) == 0
    # Cancelled, not waited for: well inside the 8 s budget.
    assert time.monotonic() - sent < 4
    job = ProcrastinateJob.objects.get(id=turn.reply.job_id)
    assert job.status == "todo"
    assert Reply.objects.get(pk=turn.reply.pk).status == "pending"
    report = LifecycleReport.objects.get(kind="shutdown", instance__pid=stopping.pid)
    steps = {s["name"]: s for s in report.steps}
    assert steps["hand_back_replies"]["count"] == 1
    assert report.ok

    _started(start_worker(QUEEN_LOCAL_DELAY="0.5", **SINK))
    reply = _replied(turn.reply, timeout=15)
    assert reply.turn.seq == 2
    assert Reply.objects.get(pk=turn.reply.pk).attempts == 0  # a hand-back spends no attempt
    assert _assistant_turns_per_user_turn(conversation) == {1: 1}


def test_replies__concurrent_user_turns_each_get_one_reply_in_order(user, start_worker):
    conversation = Conversation.objects.create(owner=user)
    for _ in range(2):
        _started(start_worker(QUEEN_LOCAL_DELAY="0.3", **SINK))
    errors: list[BaseException] = []

    def post(n: int) -> None:
        try:
            turn_append(conversation_id=conversation.id, user=user, role="user", content=f"question {n}")
        except BaseException as exc:
            errors.append(exc)
        finally:
            close_old_connections()

    threads = [threading.Thread(target=post, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    wait_for(
        lambda: Reply.objects.filter(conversation=conversation, status="done").count() == 4,
        timeout=30,
        message="four replies",
    )
    assert _assistant_turns_per_user_turn(conversation) == {1: 1, 2: 1, 3: 1, 4: 1}
    replies = Reply.objects.filter(conversation=conversation).select_related("user_turn", "turn")
    by_question = sorted(replies, key=lambda r: r.user_turn.seq)
    # In order: the reply to an earlier turn comes before the reply to a later one.
    assert [r.turn.seq for r in by_question] == sorted(r.turn.seq for r in by_question)
    assert all(f"turn {r.user_turn.seq}" in r.turn.content for r in by_question)

"""Reads of the hive: conversations with their turns (hot history first), the board."""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User

from core.dependencies import unavailable_dependency
from core.redis import redis_client, redis_text
from hive import history
from hive.conf import hive_settings, queen_settings
from hive.metrics import history_rebuilds
from hive.models import BeeQueue, Conversation, Reply
from hive.services import (
    BoardPost,
    board_index_key,
    board_post_key,
    conversation_not_found,
    queue_not_found,
    uuid_or_none,
)
from lifecycle.sessions.metrics import SESSIONS_RECOVERED

logger = logging.getLogger(__name__)


def conversation_get(*, conversation_id: Any, user: User) -> Conversation:
    """The user's conversation; NotFound for another user's, as for none."""
    pk = uuid_or_none(conversation_id)
    conversation = None if pk is None else Conversation.objects.filter(pk=pk, owner=user).first()
    if conversation is None:
        raise conversation_not_found()
    return conversation


def conversation_list(*, user: User, limit: int = 50) -> list[Conversation]:
    return list(Conversation.objects.filter(owner=user).order_by("-updated_at")[:limit])


def _turns_from_db(conversation: Conversation) -> list[dict[str, Any]]:
    return [history.turn_dict(turn) for turn in conversation.turns.order_by("seq")]


def conversation_turns(*, conversation: Conversation) -> list[dict[str, Any]]:
    """The turns in seq order, from the hot history when it is whole, else rebuilt from PostgreSQL.

    `conversation.last_seq` (read from PostgreSQL with the conversation) says how many turns there
    must be: a history that lost some (or all) of them is rebuilt, and the rebuild is counted.
    """
    expected = range(1, conversation.last_seq + 1)
    try:
        hot = history.history_read(conversation.id)
    except Exception as exc:
        if unavailable_dependency(exc) != "redis":
            raise
        # Redis is down: PostgreSQL has every turn, serve from there.
        logger.warning("hot history unavailable for %s, reading PostgreSQL", conversation.id)
        return _turns_from_db(conversation)
    if hot is not None and all(seq in hot for seq in expected):
        # Turns appended after `last_seq` was read are left for the next read: the answer is a
        # gap-free prefix even while another instance is appending.
        return [hot[seq] for seq in expected]
    turns = _turns_from_db(conversation)
    try:
        history.history_rebuild(conversation.id, turns)
    except Exception as exc:
        if unavailable_dependency(exc) != "redis":
            raise
        logger.warning("could not rebuild hot history for %s", conversation.id)
    SESSIONS_RECOVERED.inc()
    history_rebuilds.labels(reason="missing" if hot is None else "incomplete").inc()
    return turns


@dataclass(frozen=True)
class BoardPage:
    items: list[BoardPost]
    count: int
    next_offset: int | None


def board_post_list(*, limit: int | None = None, offset: int = 0) -> BoardPage:
    """Live posts, newest first. Index entries of expired posts are removed on the way."""
    limit = hive_settings.BOARD_PAGE_SIZE if limit is None else limit
    client = redis_client()
    index = board_index_key()
    ttl_ms = int(hive_settings.BOARD_TTL_SECONDS * 1000)
    now_ms = int(time.time() * 1000)
    client.zremrangebyscore(index, "-inf", f"({now_ms - ttl_ms}")
    items: list[BoardPost] = []
    # A post may expire before its index entry's time (a shorter TTL when it was written):
    # drop such entries and read further so the page is still full.
    for _ in range(5):
        ids = [redis_text(i) for i in client.zrevrange(index, offset, offset + limit - 1)]
        if not ids:
            break
        raw = client.mget([board_post_key(i) for i in ids])
        gone = [i for i, value in zip(ids, raw, strict=True) if value is None]
        if gone:
            client.zrem(index, *gone)
        items = [BoardPost.from_json(value) for value in raw if value is not None]
        if not gone or len(ids) < limit:
            break
    count = client.zcard(index)
    next_offset = offset + len(items) if offset + len(items) < count else None
    return BoardPage(items=items, count=count, next_offset=next_offset)


def reply_pending(*, reply_id: int) -> Reply | None:
    return (
        Reply.objects.select_related("conversation", "user_turn")
        .filter(pk=reply_id, status=Reply.Status.PENDING)
        .first()
    )


def reply_history(*, reply: Reply) -> list[dict[str, Any]]:
    """What the Queen answers from: the conversation as it is now (hot history, PostgreSQL when
    Redis lost it), without the user turns after the one answered (their replies come later:
    one conversation's replies are generated one after another, in order)."""
    conversation = Conversation.objects.get(pk=reply.conversation_id)
    answered = reply.user_turn.seq
    return [
        turn
        for turn in conversation_turns(conversation=conversation)
        if turn["seq"] <= answered or turn["role"] != "user"
    ]


def replies_open(*, conversation: Conversation) -> list[Reply]:
    """The conversation's replies still pending or failed, in the order of their turns."""
    return list(
        Reply.objects.filter(conversation=conversation)
        .exclude(status=Reply.Status.DONE)
        .select_related("user_turn")
        .order_by("user_turn__seq")
    )


_waiters = {"count": 0}
_waiters_lock = threading.Lock()


def conversation_turns_after(*, conversation: Conversation, after: int, wait: float = 0.0) -> Conversation:
    """The conversation re-read once it has turns after `after`, a pending reply failed, or `wait`
    seconds passed (at most QUEEN_MAX_WAIT_SECONDS). A wait holds the request's thread (gunicorn
    gthread): past QUEEN_MAX_WAITERS_PER_PROCESS waits at once, or with Redis out of reach, the
    answer comes at once and the client asks again."""
    wait = max(0.0, min(wait, queen_settings.MAX_WAIT_SECONDS))
    if wait <= 0:
        return conversation
    with _waiters_lock:
        admitted = _waiters["count"] < queen_settings.MAX_WAITERS_PER_PROCESS
        if admitted:
            _waiters["count"] += 1
    if not admitted:
        return conversation
    pending = Reply.objects.filter(conversation=conversation, status=Reply.Status.PENDING).count()

    def ready() -> bool:
        conversation.refresh_from_db(fields=["last_seq", "title"])
        if conversation.last_seq > after:
            return True
        return Reply.objects.filter(conversation=conversation, status=Reply.Status.PENDING).count() < pending

    try:
        history.turns_wait(conversation.id, timeout=wait, ready=ready)
    except Exception as exc:
        if unavailable_dependency(exc) != "redis":
            raise
        logger.warning("cannot wait for %s: Redis unavailable", conversation.id)
    finally:
        with _waiters_lock:
            _waiters["count"] -= 1
    return conversation


def bee_queue_for(*, user: User, name: str) -> BeeQueue:
    """The queue `name` if `user` owns it or is a member; NotFound otherwise, as for none."""
    from django.db.models import Q

    queue = BeeQueue.objects.filter(Q(owner=user) | Q(members=user), name=name).distinct().first()
    if queue is None:
        raise queue_not_found(name)
    return queue


def bee_queue_list(*, user: User) -> list[BeeQueue]:
    """The queues `user` owns or is a member of."""
    from django.db.models import Q

    return list(
        BeeQueue.objects.filter(Q(owner=user) | Q(members=user))
        .distinct()
        .select_related("owner")
        .prefetch_related("members")
    )

"""Writes of the hive: conversations and turns (PostgreSQL + outbox, then the hot history in
Redis), board posts (Redis with expiry), bee decisions (outbox)."""

from __future__ import annotations

import dataclasses
import json
import logging
import secrets
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from django.contrib.auth.models import User
from django.db import connection, transaction
from django.utils import timezone

from core.errors import Conflict, InvalidInput, NotFound, Throttled
from core.redis import RedisScript, redis_client
from hive import history
from hive.conf import hive_settings, queen_settings
from hive.models import BeeQueue, Conversation, Reply, Turn
from lifecycle.outbox.services import record_event
from lifecycle.queues.services import InvalidQueueName, queue_delete, queue_validate_name
from lifecycle.wake import work_created

logger = logging.getLogger(__name__)


def uuid_or_none(value: Any) -> uuid.UUID | None:
    """`value` as a UUID, or None when it is not one (an id in a URL: a 404, not a 400)."""
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError:
        return None


def _require_text(errors: dict[str, str], field: str, value: Any, max_chars: int) -> None:
    if not isinstance(value, str) or not value.strip():
        errors[field] = f"{field} must not be empty."
    elif len(value) > max_chars:
        errors[field] = f"{field} is longer than {max_chars} characters."
    elif "\x00" in value:
        # PostgreSQL text cannot hold NUL; refused here for the web forms too, not only the API.
        errors[field] = f"{field} must not contain NUL characters."


def conversation_not_found() -> NotFound:
    # The same answer for another user's conversation as for none: no leak of existence.
    return NotFound("No such conversation.")


def _after_commit(func: Callable[..., Any], *args: Any) -> Callable[[], None]:
    # A named function, not functools.partial: Django's robust on_commit logs a failure with
    # func.__qualname__, which a partial lacks (the AttributeError would escape as a 503).
    def hook() -> None:
        func(*args)

    hook.__qualname__ = f"after_commit:{func.__qualname__}"
    return hook


def conversation_create(*, owner: User, title: str = "") -> Conversation:
    if len(title) > 200:
        raise InvalidInput.of({"title": "title is longer than 200 characters."})
    if "\x00" in title:
        raise InvalidInput.of({"title": "title must not contain NUL characters."})
    with transaction.atomic():
        conversation = Conversation.objects.create(owner=owner, title=title)
        # The hot history starts with the conversation; if Redis misses this, the first read
        # rebuilds it (robust: the conversation is committed whatever Redis does).
        transaction.on_commit(_after_commit(history.history_start, conversation.id), robust=True)
    return conversation


def _turn_insert(
    *, conversation_id: uuid.UUID, owner_id: Any, role: str, content: str, answers_id: int | None = None
) -> Turn:
    """Insert a turn with the next seq and its analytics event, in the caller's transaction; the
    hot history and the waiting readers hear of it after commit. NotFound unless `owner_id` owns
    the conversation."""
    with connection.cursor() as cursor:
        # The row lock taken by this UPDATE is held until commit: a concurrent append on any
        # instance waits here and then reads the incremented counter, so seqs are consecutive.
        cursor.execute(
            f"UPDATE {Conversation._meta.db_table} SET last_seq = last_seq + 1, updated_at = %s "
            "WHERE id = %s AND owner_id = %s RETURNING last_seq",
            [timezone.now(), conversation_id, owner_id],
        )
        row = cursor.fetchone()
    if row is None:
        raise conversation_not_found()
    turn = Turn.objects.create(
        conversation_id=conversation_id, seq=row[0], role=role, content=content, answers_id=answers_id
    )
    record_event(
        kind="llm_conversation",
        payload={
            "conversation_id": str(conversation_id),
            "seq": turn.seq,
            "role": turn.role,
            "content": turn.content,
            "user_id": owner_id,
            "created_at": turn.created_at.isoformat(),
        },
    )
    # Only a committed turn goes to Redis. robust: a Redis failure here must not turn an
    # acknowledged, durable write into an error (the client would retry and duplicate it);
    # the next read sees the gap and rebuilds from PostgreSQL.
    transaction.on_commit(_after_commit(history.history_append, conversation_id, history.turn_dict(turn)), robust=True)
    transaction.on_commit(_after_commit(history.turns_notify, conversation_id), robust=True)
    return turn


def _reply_defer(reply: Reply) -> None:
    from hive.tasks import generate_reply

    # The job joins the caller's transaction (procrastinate's Django connector uses Django's
    # connection): the turn, its pending reply and the job commit together or not at all. The
    # lock runs one conversation's replies one after another, in the order of their turns.
    reply.job_id = generate_reply.configure(lock=reply_lock(reply.conversation_id)).defer(reply_id=reply.pk)
    Reply.objects.filter(pk=reply.pk).update(job_id=reply.job_id)
    work_created()


def reply_lock(conversation_id: Any) -> str:
    return f"hive-conversation:{conversation_id}"


def turn_append(*, conversation_id: Any, user: User, role: str, content: str) -> Turn:
    """Append a user turn with the next seq and queue the Queen's reply to it (`turn.reply`).
    NotFound unless `user` owns the conversation. The Queen's turns are written by the service
    only (`reply_complete`)."""
    errors: dict[str, str] = {}
    if role != Turn.Role.USER:
        errors["role"] = "role must be user: the Queen's (assistant) turns are written by the service."
    _require_text(errors, "content", content, hive_settings.MAX_TURN_CHARS)
    if errors:
        raise InvalidInput.of(errors)
    pk = uuid_or_none(conversation_id)
    if pk is None:
        raise conversation_not_found()
    with transaction.atomic():
        turn = _turn_insert(conversation_id=pk, owner_id=user.pk, role=role, content=content)
        reply = Reply.objects.create(conversation_id=pk, user_turn=turn)
        _reply_defer(reply)
    return turn


def reply_retry(*, conversation_id: Any, reply_id: Any, user: User) -> Reply:
    """Queue a failed reply again (the user's retry); Conflict unless it failed."""
    pk = uuid_or_none(conversation_id)
    if pk is None:
        raise conversation_not_found()
    with transaction.atomic():
        reply = (
            Reply.objects.select_for_update()
            .filter(pk=reply_id if isinstance(reply_id, int) else -1, conversation_id=pk, conversation__owner=user)
            .first()
        )
        if reply is None:
            raise NotFound("No such reply.")
        if reply.status != Reply.Status.FAILED:
            raise Conflict(f"The reply is {reply.status}: only a failed reply can be retried.")
        reply.status, reply.attempts, reply.error = Reply.Status.PENDING, 0, ""
        reply.save(update_fields=["status", "attempts", "error", "updated_at"])
        _reply_defer(reply)
        transaction.on_commit(_after_commit(history.turns_notify, pk), robust=True)
    return reply


def reply_complete(*, reply_id: int, content: str) -> tuple[Reply, bool]:
    """Append the Queen's turn for a pending reply; (reply, False) when it is already there (a
    retried job) or no longer pending. The assistant turn's unique `answers` makes a second
    one impossible even past this check."""
    with transaction.atomic():
        reply = Reply.objects.select_for_update().select_related("conversation").filter(pk=reply_id).first()
        if reply is None or reply.status != Reply.Status.PENDING:
            return reply, False  # type: ignore[return-value]
        turn = _turn_insert(
            conversation_id=reply.conversation_id,
            owner_id=reply.conversation.owner_id,
            role=Turn.Role.ASSISTANT,
            content=content,
            answers_id=reply.user_turn_id,
        )
        reply.status, reply.turn, reply.error = Reply.Status.DONE, turn, ""
        reply.save(update_fields=["status", "turn", "error", "updated_at"])
    return reply, True


def reply_record_failure(*, reply_id: int, error: str) -> Reply | None:
    """Count a failed call; the reply becomes failed (visible, retryable) once the attempts are
    spent. None when the reply is no longer pending."""
    with transaction.atomic():
        reply = Reply.objects.select_for_update().filter(pk=reply_id).first()
        if reply is None or reply.status != Reply.Status.PENDING:
            return None
        reply.attempts += 1
        reply.error = error[:2000]
        if reply.attempts >= queen_settings.MAX_ATTEMPTS:
            reply.status = Reply.Status.FAILED
            transaction.on_commit(_after_commit(history.turns_notify, reply.conversation_id), robust=True)
        reply.save(update_fields=["status", "attempts", "error", "updated_at"])
    return reply


@dataclass(frozen=True)
class BoardPost:
    id: str
    body: str
    author: str
    created_at: datetime
    expires_at: datetime

    def as_json(self) -> str:
        return json.dumps(
            {
                "id": self.id,
                "body": self.body,
                "author": self.author,
                "created_at": self.created_at.isoformat(),
                "expires_at": self.expires_at.isoformat(),
            }
        )

    @classmethod
    def from_json(cls, raw: bytes | str) -> BoardPost:
        data = json.loads(raw)
        return cls(
            id=data["id"],
            body=data["body"],
            author=data["author"],
            created_at=datetime.fromisoformat(data["created_at"]),
            expires_at=datetime.fromisoformat(data["expires_at"]),
        )


def board_index_key() -> str:
    return f"{hive_settings.BOARD_KEY_PREFIX}index"


def board_post_key(post_id: str) -> str:
    return f"{hive_settings.BOARD_KEY_PREFIX}post:{post_id}"


# KEYS: post, index, dedupe mark, the author's counter of this hour. ARGV: post id, post json,
# ttl ms, created ms, posts allowed per hour, seconds left in the hour. A mark set by an earlier
# attempt of the same request returns that attempt's post id and writes nothing (a retry is not
# counted twice). The counter is incremented and given its expiry in this same script.
_BOARD_POST_ONCE = """
local existing = redis.call('GET', KEYS[3])
if existing then return existing end
local posted = redis.call('INCR', KEYS[4])
if posted == 1 then redis.call('EXPIRE', KEYS[4], ARGV[6]) end
if posted > tonumber(ARGV[5]) then return false end
redis.call('SET', KEYS[1], ARGV[2], 'PX', ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
redis.call('SET', KEYS[3], ARGV[1], 'PX', ARGV[3])
return ARGV[1]
"""
_board_post_once = RedisScript(_BOARD_POST_ONCE)


def board_post_create(*, author: str, body: str, dedupe: str | None = None) -> BoardPost:
    """Post on the board. `dedupe` (see lifecycle.idempotency.idempotency_effect_token) names the
    request: posting again under the same name returns the first post and adds none."""
    errors: dict[str, str] = {}
    _require_text(errors, "body", body, hive_settings.BOARD_MAX_POST_CHARS)
    if errors:
        raise InvalidInput.of(errors)
    ttl_ms = int(hive_settings.BOARD_TTL_SECONDS * 1000)
    now = datetime.now(tz=UTC)
    post = BoardPost(
        # Starts with the creation microsecond (fixed width): posts of one millisecond (one index
        # score) are ordered by member, so newest first holds within the millisecond too.
        id=f"{int(now.timestamp() * 1_000_000):014x}{secrets.token_hex(8)}",
        body=body,
        author=author,
        created_at=now,
        expires_at=now + timedelta(milliseconds=ttl_ms),
    )
    created_ms = int(now.timestamp() * 1000)
    client = redis_client()
    # One script: a post is never in the index without its key, nor the other way round. The post
    # expires by itself; the index entry (scored by creation time) is dropped by the listing.
    mark = board_index_key() + f":posted:{dedupe or post.id}"
    hour, into_hour = divmod(int(now.timestamp()), 3600)
    counter = f"{hive_settings.BOARD_KEY_PREFIX}rate:{author}:{hour}"
    limit = hive_settings.BOARD_MAX_POSTS_PER_HOUR
    raw = _board_post_once(
        client,
        keys=[board_post_key(post.id), board_index_key(), mark, counter],
        args=[post.id, post.as_json(), ttl_ms, created_ms, limit, 3600 - into_hour],
    )
    if raw is None:
        raise Throttled(
            f"You have written {limit} board posts this hour, the limit: retry in {3600 - into_hour} s.",
            retry_after=3600 - into_hour,
        )
    post_id = raw.decode()
    if post_id != post.id:
        return dataclasses.replace(post, id=post_id)
    return post


def bee_decision_record(*, bee: str, decision: str, context: dict[str, Any], user: User) -> uuid.UUID:
    """Record a bee's decision as an analytics event (outbox, then BigQuery)."""
    errors: dict[str, str] = {}
    try:
        queue_validate_name(bee, field="bee")
    except InvalidQueueName as exc:
        errors["bee"] = exc.message
    _require_text(errors, "decision", decision, hive_settings.MAX_DECISION_CHARS)
    if not isinstance(context, dict):
        errors["context"] = "context must be an object."
    elif "\\u0000" in json.dumps(context):
        # PostgreSQL's jsonb (the outbox) cannot hold NUL characters.
        errors["context"] = "context must not contain NUL characters."
    if errors:
        raise InvalidInput.of(errors)
    try:
        with transaction.atomic():
            return record_event(
                kind="bee_decision",
                payload={
                    "bee": bee,
                    "decision": decision,
                    "context": context,
                    "user_id": user.pk,
                    "decided_at": timezone.now().isoformat(),
                    # Lets BigQuery tell two identical decisions apart.
                    "decision_id": secrets.token_hex(16),
                },
            )
    except ValueError as exc:
        # record_event refuses what BigQuery could not store (NaN, Infinity) before any SQL.
        raise InvalidInput.of({"context": f"context is not storable: {exc}"}) from exc


# --- bee queues: who may use which ----------------------------------------------------------------


def queue_not_found(name: str) -> NotFound:
    # The same answer for a queue the caller may not use as for none: no leak of existence.
    return NotFound(f"No queue named {name}.")


def bee_queue_create(*, owner: User, name: str, members: list[str] | None = None) -> BeeQueue:
    """A queue owned by `owner`; `members` (usernames) may use it too. 409 if the name is taken
    (queue names are one namespace, like usernames), 422 for an unknown member."""
    try:
        queue_validate_name(name)
    except InvalidQueueName as exc:
        raise InvalidInput.of({"name": exc.message}) from None
    usernames = list(dict.fromkeys(members or []))
    if len(usernames) > hive_settings.MAX_QUEUE_MEMBERS:
        raise InvalidInput.of({"members": f"At most {hive_settings.MAX_QUEUE_MEMBERS} members."})
    from django.contrib.auth import get_user_model

    found = list(get_user_model().objects.filter(username__in=usernames, is_active=True))
    unknown = sorted(set(usernames) - {u.get_username() for u in found})
    if unknown:
        raise InvalidInput.of({"members": f"No such users: {', '.join(unknown)}."})
    with transaction.atomic():
        # The owner's row lock serialises their queue creations: the count below is exact.
        get_user_model().objects.select_for_update().filter(pk=owner.pk).first()
        limit = hive_settings.MAX_QUEUES_PER_USER
        if BeeQueue.objects.filter(owner=owner).count() >= limit:
            raise Conflict(f"You own {limit} queues, the limit: delete one first.", code="queue_limit")
        if BeeQueue.objects.filter(name=name).exists():
            raise Conflict(f"A queue named {name} exists: choose another name.", code="queue_exists")
        queue = BeeQueue.objects.create(owner=owner, name=name)
        queue.members.set([u for u in found if u.pk != owner.pk])
    return queue


def bee_queue_delete(*, queue: BeeQueue) -> None:
    """Delete a queue and its messages (the admin's delete)."""
    name = queue.name
    with transaction.atomic():
        queue.delete()
    # After the commit: if Redis misses this, the stream still expires a retention after its
    # last use, and nobody can reach it meanwhile (the queue row is gone).
    queue_delete(name=name)

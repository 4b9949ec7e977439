"""The hive's JSON API: conversations, the board, bee message queues and bee decisions.

Mounted on the project's NinjaAPI (omk/api.py), so auth (bearer token or session + CSRF), the
error format, the 64 KiB body limit and Idempotency-Key handling are the governance API's.
"""

import uuid
from datetime import datetime
from typing import Any, Literal

from ninja import Field, Query, Router, Schema, Status
from pydantic import model_validator

from core.errors import InvalidInput
from core.http import ApiRequest
from core.schemas import ERRORS, NO_NUL, BodySchema, QueryInt
from hive import history, selectors, services
from hive.conf import hive_settings, queen_settings
from hive.models import Reply
from lifecycle.idempotency.decorators import idempotency_effect_token, idempotent
from lifecycle.queues.conf import queues_settings
from lifecycle.queues.services import NAME_PATTERN, queue_ack, queue_claim, queue_publish, queue_validate_name

router = Router(tags=["hive"])


# --- conversations ---------------------------------------------------------------------------


class ConversationIn(BodySchema):
    title: str = Field("", max_length=200, pattern=NO_NUL)

    @model_validator(mode="before")
    @classmethod
    def _an_object(cls, data: Any) -> Any:
        # Every field has a default, so pydantic would otherwise take `[]` or `null` for `{}`.
        # ninja hands the parsed body over wrapped (DjangoGetter) for attribute access.
        if not isinstance(getattr(data, "_obj", data), dict):
            raise ValueError('The body must be a JSON object, e.g. {} or {"title": "..."}.')
        return data


class Created(Schema):
    id: uuid.UUID


class TurnIn(BodySchema):
    # The Queen's (assistant) turns are written by the service only.
    role: Literal["user"]
    content: str = Field(..., min_length=1, max_length=hive_settings.MAX_TURN_CHARS, pattern=NO_NUL)


class TurnOut(Schema):
    seq: int
    role: str
    content: str
    created_at: datetime


class ReplyOut(Schema):
    id: int
    status: str
    # The seq of the user turn answered, and of the Queen's turn once done.
    answers_seq: int
    seq: int | None = None
    attempts: int = 0
    error: str = ""


class TurnCreated(Schema):
    seq: int
    turn: TurnOut
    reply: ReplyOut


class ConversationOut(Schema):
    id: uuid.UUID
    title: str
    turns: list[TurnOut]
    # Replies still pending or failed (a failed one can be retried).
    replies: list[ReplyOut]


class TurnsOut(Schema):
    last_seq: int
    turns: list[TurnOut]
    replies: list[ReplyOut]


class TurnsQuery(Schema):
    after: QueryInt = Field(0, ge=0)
    wait: float = Field(0.0, ge=0, le=queen_settings.MAX_WAIT_SECONDS)


def _reply_out(reply: Reply, *, answers_seq: int | None = None) -> dict[str, Any]:
    return {
        "id": reply.pk,
        "status": reply.status,
        "answers_seq": reply.user_turn.seq if answers_seq is None else answers_seq,
        "seq": None,
        "attempts": reply.attempts,
        "error": reply.error,
    }


@router.post("/conversations/", response={201: Created, **ERRORS}, summary="Start a conversation with the Queen AI")
@idempotent
def conversation_create_view(request: ApiRequest, body: ConversationIn):
    conversation = services.conversation_create(owner=request.auth, title=body.title)
    return Status(201, {"id": conversation.id})


@router.post("/conversations/{conversation_id}/turns/", response={201: TurnCreated, **ERRORS}, summary="Append a turn")
@idempotent
def turn_append_view(request: ApiRequest, conversation_id: uuid.UUID, payload: TurnIn):
    turn = services.turn_append(
        conversation_id=conversation_id, user=request.auth, role=payload.role, content=payload.content
    )
    reply = _reply_out(turn.reply, answers_seq=turn.seq)
    return Status(201, {"seq": turn.seq, "turn": history.turn_dict(turn), "reply": reply})


@router.get(
    "/conversations/{conversation_id}/turns/",
    response={200: TurnsOut, **ERRORS},
    summary="Turns after a seq, waiting up to 25 s for them",
)
def turns_after_view(request: ApiRequest, conversation_id: uuid.UUID, query: Query[TurnsQuery]):
    conversation = selectors.conversation_get(conversation_id=conversation_id, user=request.auth)
    conversation = selectors.conversation_turns_after(conversation=conversation, after=query.after, wait=query.wait)
    turns = [turn for turn in selectors.conversation_turns(conversation=conversation) if turn["seq"] > query.after]
    replies = [_reply_out(reply) for reply in selectors.replies_open(conversation=conversation)]
    return {"last_seq": conversation.last_seq, "turns": turns, "replies": replies}


@router.post(
    "/conversations/{conversation_id}/replies/{reply_id}/retry",
    response={202: ReplyOut, **ERRORS},
    summary="Queue a failed reply again",
)
def reply_retry_view(request: ApiRequest, conversation_id: uuid.UUID, reply_id: int):
    reply = services.reply_retry(conversation_id=conversation_id, reply_id=reply_id, user=request.auth)
    return Status(202, _reply_out(reply))


@router.get(
    "/conversations/{conversation_id}/",
    response={200: ConversationOut, **ERRORS},
    summary="A conversation and its turns",
)
def conversation_detail_view(request: ApiRequest, conversation_id: uuid.UUID):
    conversation = selectors.conversation_get(conversation_id=conversation_id, user=request.auth)
    turns = selectors.conversation_turns(conversation=conversation)
    replies = [_reply_out(reply) for reply in selectors.replies_open(conversation=conversation)]
    return {"id": conversation.id, "title": conversation.title, "turns": turns, "replies": replies}


# --- board -----------------------------------------------------------------------------------


class BoardPostIn(BodySchema):
    body: str = Field(..., min_length=1, max_length=hive_settings.BOARD_MAX_POST_CHARS, pattern=NO_NUL)


class BoardPostCreated(Schema):
    id: str


class BoardPostOut(Schema):
    id: str
    body: str
    author: str
    created_at: datetime
    expires_at: datetime


class BoardPageOut(Schema):
    items: list[BoardPostOut]
    count: int
    next_offset: int | None


class BoardPageQuery(Schema):
    limit: QueryInt = Field(20, ge=1, le=hive_settings.BOARD_MAX_PAGE_SIZE)
    offset: QueryInt = Field(0, ge=0, le=1_000_000)


@router.post(
    "/board/", response={201: BoardPostCreated, **ERRORS}, summary="Post on the hive board (expires after 7 days)"
)
@idempotent
def board_post_create_view(request: ApiRequest, payload: BoardPostIn):
    post = services.board_post_create(
        author=request.auth.get_username(), body=payload.body, dedupe=idempotency_effect_token(request)
    )
    return Status(201, {"id": post.id})


@router.get("/board/", response={200: BoardPageOut, **ERRORS}, summary="The hive board, newest first")
def board_post_list_view(request: ApiRequest, page: Query[BoardPageQuery]):
    limit = min(page.limit, hive_settings.BOARD_MAX_PAGE_SIZE)
    result = selectors.board_post_list(limit=limit, offset=page.offset)
    return {"items": result.items, "count": result.count, "next_offset": result.next_offset}


# --- bee message queues ----------------------------------------------------------------------


class QueueMessageIn(BodySchema):
    body: str = Field(..., min_length=1, max_length=hive_settings.MAX_MESSAGE_CHARS, pattern=NO_NUL)


class QueueMessageCreated(Schema):
    id: str


class QueueClaimIn(BodySchema):
    consumer: str = Field(..., min_length=1, max_length=64)
    count: int = Field(1, ge=1, le=queues_settings.MAX_CLAIM_COUNT)
    block_ms: int = Field(0, ge=0, le=queues_settings.MAX_BLOCK_MS)


class QueueMessageOut(Schema):
    id: str
    body: str
    published_at: datetime
    redelivered: bool
    requeued_from: str | None


class QueueClaimOut(Schema):
    messages: list[QueueMessageOut]


class QueueAckIn(BodySchema):
    ids: list[str] = Field(..., min_length=1, max_length=1000)
    # Only messages delivered to this consumer (and not taken over since) are acked.
    consumer: str = Field(..., min_length=1, max_length=64)


class QueueAckOut(Schema):
    acked: list[str]
    not_pending: list[str]


class QueueIn(BodySchema):
    name: str = Field(..., min_length=1, max_length=64, pattern=NAME_PATTERN.pattern)
    members: list[str] = Field(default_factory=list, max_length=hive_settings.MAX_QUEUE_MEMBERS)


class QueueOut(Schema):
    name: str
    owner: str
    members: list[str]
    created_at: datetime


def _queue_out(queue) -> dict:
    return {
        "name": queue.name,
        "owner": queue.owner.get_username(),
        "members": sorted(m.get_username() for m in queue.members.all()),
        "created_at": queue.created_at,
    }


def _queue(request: ApiRequest, name: str):
    """The queue if the caller may use it: checked in PostgreSQL before anything touches Redis,
    so a made-up name creates nothing there. 404 alike for none and for another's queue."""
    queue_validate_name(name)
    return selectors.bee_queue_for(user=request.auth, name=name)


@router.post("/queues/", response={201: QueueOut, **ERRORS}, summary="Create a bee queue owned by the caller")
@idempotent
def queue_create_view(request: ApiRequest, payload: QueueIn):
    queue = services.bee_queue_create(owner=request.auth, name=payload.name, members=payload.members)
    return Status(201, _queue_out(queue))


@router.get(
    "/queues/", response={200: list[QueueOut], **ERRORS}, summary="The queues the caller owns or is a member of"
)
def queue_list_view(request: ApiRequest):
    return [_queue_out(queue) for queue in selectors.bee_queue_list(user=request.auth)]


@router.post(
    "/queues/{name}/",
    response={201: QueueMessageCreated, **ERRORS},
    summary="Publish a message to a bee queue (owner and members)",
)
@idempotent
def queue_publish_view(request: ApiRequest, name: str, payload: QueueMessageIn):
    queue = _queue(request, name)
    if len(payload.body) > hive_settings.MAX_MESSAGE_CHARS:
        raise InvalidInput.of({"body": f"body is longer than {hive_settings.MAX_MESSAGE_CHARS} characters."})
    message_id = queue_publish(
        name=queue.name,
        body=payload.body,
        dedupe=idempotency_effect_token(request),
        max_length=hive_settings.QUEUE_MAX_LENGTH,
    )
    return Status(201, {"id": message_id})


@router.post(
    "/queues/{name}/claim",
    response={200: QueueClaimOut, **ERRORS},
    summary="Claim messages for a consumer (owner and members)",
)
def queue_claim_view(request: ApiRequest, name: str, payload: QueueClaimIn):
    queue = _queue(request, name)
    messages = queue_claim(name=queue.name, consumer=payload.consumer, count=payload.count, block_ms=payload.block_ms)
    return {"messages": messages}


@router.post(
    "/queues/{name}/ack",
    response={200: QueueAckOut, **ERRORS},
    summary="Acknowledge messages delivered to a consumer (each at most once; owner and members)",
)
@idempotent
def queue_ack_view(request: ApiRequest, name: str, payload: QueueAckIn):
    queue = _queue(request, name)
    result = queue_ack(
        name=queue.name, ids=payload.ids, consumer=payload.consumer, dedupe=idempotency_effect_token(request)
    )
    return {"acked": result.acked, "not_pending": result.not_pending}


# --- bee decisions ---------------------------------------------------------------------------


class DecisionIn(BodySchema):
    decision: str = Field(..., min_length=1, max_length=hive_settings.MAX_DECISION_CHARS, pattern=NO_NUL)
    context: dict[str, Any] = Field(default_factory=dict)


class DecisionAccepted(Schema):
    event_id: uuid.UUID


@router.post(
    "/bees/{bee}/decisions/", response={202: DecisionAccepted, **ERRORS}, summary="Record a bee decision (analytics)"
)
@idempotent
def bee_decision_view(request: ApiRequest, bee: str, payload: DecisionIn):
    event_id = services.bee_decision_record(
        bee=bee, decision=payload.decision, context=payload.context, user=request.auth
    )
    return Status(202, {"event_id": event_id})

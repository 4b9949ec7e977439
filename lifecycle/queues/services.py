"""Message queues between bees: Redis streams read through one consumer group per queue.

A published message is in Redis before `queue_publish` returns. A consumer that claims messages
owns them (in the group's pending list) until it acks them; if it dies, or simply does not ack
within the visibility timeout, the next claim by any consumer takes them over (XAUTOCLAIM), so
nothing a dead consumer held is lost. XACK removes a message from the pending list once: a second
ack of the same id returns 0 and is reported, so a message is acked at most once. Messages older
than the retention (24 h) are trimmed by id (stream ids are millisecond timestamps), acked or not.

`queue_reclaim_stale` is the startup-recovery (and operator) entry point: it puts every message
held past the visibility timeout back into its queue at once, instead of waiting for a claim.
`queue_release` is the hand-back of a consumer that stops (shutdown).

Every key here is bounded: a stream expires a retention after its last publish or claim, its
messages are trimmed past retention, an acked message is deleted, and `queue_publish` refuses
a message beyond the caller's cap; dedupe marks expire with the retention. Who may use which
queue is decided before these are called (hive.services: owners and members).
"""

from __future__ import annotations

import functools
import re
import secrets
import time
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, cast

from redis import Redis
from redis.exceptions import ResponseError

from core.errors import InvalidInput, ServiceError
from core.redis import RedisScript, redis_client, redis_text, replicated
from lifecycle.queues.conf import queues_settings
from lifecycle.queues.metrics import QUEUE_MESSAGES

# Letters, digits, '_', '-' and '.', starting with a letter or digit: safe in Redis keys, URLs
# and logs (no ':' so a name cannot reach into another key space, no '*' for SCAN patterns).
NAME_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
MAX_NAME_LENGTH = 64
ID_PATTERN = re.compile(r"^\d{1,20}-\d{1,20}$")
MAX_ACK_IDS = 1000
BODY_FIELD = "body"
REQUEUED_FIELD = "requeued_from"

# Acks only what is pending and owned by the consumer named: a consumer whose messages were
# taken over must not ack them under the new owner's feet. ('' for any consumer is left for the
# operator's tools; the API always names one.)
# KEYS: stream, mark (the request's dedupe mark, or one of this call alone). ARGV: group,
# consumer ('' for any), mark ttl (ms), ids... An ack's effect is its result: a resent ack (its
# reply lost in a failover, or redis-py resending after a broken connection) finds the first
# one's result in the mark, written in the same script (and so replicated, and WAITed for, with
# it), and answers it again, instead of "not pending" for the messages it acked itself.
_ACK = """
local done = redis.call('GET', KEYS[2])
if done then return cjson.decode(done) end
local result = {}
for i = 4, #ARGV do
  local owned = true
  if ARGV[2] ~= '' then
    owned = #redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1, ARGV[2]) > 0
  end
  if owned then
    local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[i])
    -- An acked message is done: deleting it keeps the stream's length equal to its backlog
    -- (unread plus unacked), which is what the length cap counts.
    if acked == 1 then redis.call('XDEL', KEYS[1], ARGV[i]) end
    result[#result + 1] = acked
  else
    result[#result + 1] = 0
  end
end
redis.call('SET', KEYS[2], cjson.encode(result), 'PX', ARGV[3])
return result
"""
_ack = RedisScript(_ACK)

# Puts pending messages back into the queue as new messages, atomically per script call: the old
# id is acked and deleted, a copy (with `requeued_from`) is appended for any consumer to read. The
# idle time is checked again here, so a message a consumer claimed a moment ago is left alone.
# KEYS: stream. ARGV: group, min idle ms, consumer ('' for any), ids...
_REQUEUE = """
local moved = 0
for i = 4, #ARGV do
  local id = ARGV[i]
  local pending
  if ARGV[3] ~= '' then
    pending = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', tonumber(ARGV[2]), id, id, 1, ARGV[3])
  else
    pending = redis.call('XPENDING', KEYS[1], ARGV[1], 'IDLE', tonumber(ARGV[2]), id, id, 1)
  end
  if #pending > 0 then
    local entry = redis.call('XRANGE', KEYS[1], id, id)
    redis.call('XACK', KEYS[1], ARGV[1], id)
    if #entry > 0 then
      local fields = entry[1][2]
      local copy = {}
      for j = 1, #fields, 2 do
        if fields[j] ~= 'requeued_from' then
          copy[#copy + 1] = fields[j]
          copy[#copy + 1] = fields[j + 1]
        end
      end
      copy[#copy + 1] = 'requeued_from'
      copy[#copy + 1] = id
      redis.call('XADD', KEYS[1], '*', unpack(copy))
      redis.call('XDEL', KEYS[1], id)
      moved = moved + 1
    end
  end
end
return moved
"""


# (queue, consumer) pairs whose consumer runs in this process (see queue_claim(in_process=True)).
# Memory only, on purpose: it says what to hand back at shutdown; if the process is killed
# instead, the visibility timeout and queue_reclaim_stale return the messages anyway.
_in_process_consumers: set[tuple[str, str]] = set()


class QueueInputError(InvalidInput):
    """Bad input to a queue operation; `field` names the argument (a 422 naming it)."""

    def __init__(self, message: str, *, field: str):
        super().__init__(f"Invalid input. {field}: {message}", fields={field: [message]})
        self.field = field
        self.message = message


class InvalidQueueName(QueueInputError):
    pass


class QueueFull(ServiceError):
    """The queue's backlog is at its cap: nothing is trimmed to make room, the publisher waits."""

    status = 429
    code = "queue_full"
    retry_after = 5


@dataclass(frozen=True)
class QueueMessage:
    id: str
    body: str
    published_at: datetime
    # True when taken over from a consumer that did not ack it in time.
    redelivered: bool
    # The id it had before startup recovery or a hand-back put it back in the queue.
    requeued_from: str | None = None


@dataclass(frozen=True)
class AckResult:
    acked: list[str]
    # Already acked, taken over by another consumer, trimmed, or never delivered.
    not_pending: list[str]


def queue_validate_name(name: str, *, field: str = "name") -> str:
    if not isinstance(name, str) or not name:
        raise InvalidQueueName(f"{field} is required.", field=field)
    if len(name) > MAX_NAME_LENGTH:
        raise InvalidQueueName(f"{field} is longer than {MAX_NAME_LENGTH} characters.", field=field)
    if not NAME_PATTERN.match(name):
        raise InvalidQueueName(
            f"{field} may contain only letters, digits, '_', '-' and '.', and must start with a letter or digit.",
            field=field,
        )
    return name


def _valid_message_id(message_id: object) -> bool:
    # Both parts are unsigned 64-bit integers in Redis: a larger one is a Redis error, not a miss.
    if not isinstance(message_id, str) or not ID_PATTERN.match(message_id):
        return False
    return all(int(part) < 2**64 for part in message_id.split("-"))


def _key(name: str) -> str:
    return f"{queues_settings.KEY_PREFIX}{queue_validate_name(name)}"


def _group() -> str:
    return queues_settings.GROUP


def _visibility_ms() -> int:
    return int(queues_settings.VISIBILITY_TIMEOUT_SECONDS * 1000)


def _min_id() -> str:
    retention_ms = int(queues_settings.RETENTION_SECONDS * 1000)
    return f"{max(int(time.time() * 1000) - retention_ms, 0)}-0"


def _message(entry: tuple[bytes, dict[bytes, bytes]], *, redelivered: bool) -> QueueMessage:
    raw_id, fields = entry
    message_id = raw_id.decode()
    requeued = fields.get(REQUEUED_FIELD.encode())
    return QueueMessage(
        id=message_id,
        body=fields.get(BODY_FIELD.encode(), b"").decode(),
        published_at=datetime.fromtimestamp(int(message_id.split("-")[0]) / 1000, tz=UTC),
        redelivered=redelivered,
        requeued_from=requeued.decode() if requeued else None,
    )


# The group and its stream, with the stream's expiry, in one script: no stream is ever left
# without a TTL. From id 0: messages published before the group existed (or after a Redis
# restart recreated the stream) are still delivered.
# The stream joins the index of grouped streams (only those can hold claimed messages), which
# the recovery pass reads instead of scanning the whole keyspace. The index and its "complete"
# mark expire together, a retention after the last claim anywhere: by then every stream in it
# has expired too, or is found again by the one SCAN a missing mark causes.
# KEYS: stream, index of grouped streams, its mark. ARGV: group, ttl (ms).
_ENSURE_GROUP = """
local ok, err = pcall(redis.call, 'XGROUP', 'CREATE', KEYS[1], ARGV[1], '0', 'MKSTREAM')
if not ok and not string.find(tostring(err), 'BUSYGROUP') then return redis.error_reply(tostring(err)) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('SADD', KEYS[2], KEYS[1])
redis.call('PEXPIRE', KEYS[2], ARGV[2])
redis.call('PEXPIRE', KEYS[3], ARGV[2])
return 1
"""

# Leaves the index a stream that has no group any more (it expired, or was deleted), checked
# here, atomically: a claim that created the group a moment ago keeps it in.
# KEYS: stream, index. ARGV: group.
_UNINDEX_UNGROUPED = """
local ok, groups = pcall(redis.call, 'XINFO', 'GROUPS', KEYS[1])
if ok then
  for _, info in ipairs(groups) do
    for i = 1, #info, 2 do
      if info[i] == 'name' and info[i + 1] == ARGV[1] then return 0 end
    end
  end
end
return redis.call('SREM', KEYS[2], KEYS[1])
"""


def _grouped_index() -> str:
    # A ':' is no part of a queue name, so no queue's stream has this key.
    return f"{queues_settings.KEY_PREFIX}:grouped"


def _grouped_index_mark() -> str:
    return f"{_grouped_index()}-complete"


def _retention_ms() -> int:
    return int(queues_settings.RETENTION_SECONDS * 1000)


def _ensure_group(key: str) -> None:
    client = redis_client()
    client.register_script(_ENSURE_GROUP)(
        keys=[key, _grouped_index(), _grouped_index_mark()], args=[_group(), _retention_ms()], client=client
    )


# KEYS: stream, mark (the request's dedupe mark, or one of this call alone). ARGV: min id, body
# field, body, stream ttl (ms), max length (0: no cap), mark ttl (ms). A mark set by an earlier
# attempt of the same request (or by this call's first send, resent by redis-py after a broken
# connection) returns that attempt's message instead of a second one. Messages past retention
# are trimmed exactly (not '~': an expired message must not be handed out by the next claim);
# then a full backlog refuses the message rather than trim unconsumed ones. The stream expires a
# retention after its last publish or claim: every message in it would be past retention by then.
_PUBLISH_ONCE = """
local existing = redis.call('GET', KEYS[2])
if existing then return existing end
redis.call('XTRIM', KEYS[1], 'MINID', ARGV[1])
local cap = tonumber(ARGV[5])
if cap > 0 and redis.call('XLEN', KEYS[1]) >= cap then return false end
local id = redis.call('XADD', KEYS[1], '*', ARGV[2], ARGV[3])
redis.call('PEXPIRE', KEYS[1], ARGV[4])
redis.call('SET', KEYS[2], id, 'PX', ARGV[6])
return id
"""
_publish_once = RedisScript(_PUBLISH_ONCE)
# Long enough for redis-py's retries of one call (a few backoffs of at most 0.5 s).
_SENT_MARK_TTL_MS = 60_000


def queue_publish(*, name: str, body: str, dedupe: str | None = None, max_length: int = 0) -> str:
    """Append a message; returns its id. Trims what is past retention in the same script.

    `dedupe` (see lifecycle.idempotency.idempotency_effect_token) names the request: publishing
    again under the same name returns the first message's id and appends nothing. `max_length`
    caps the backlog (messages not yet acked): beyond it, QueueFull (429) and nothing is written.
    """
    key = _key(name)
    client = redis_client()
    if dedupe is None:
        # redis-py sends a command again when its connection broke before the reply (the retry
        # policy in settings): a mark of this call alone makes the resent script find the message
        # the first one appended, instead of appending it twice.
        mark, mark_ttl_ms = f"{key}:sent:{secrets.token_hex(8)}", _SENT_MARK_TTL_MS
    else:
        mark, mark_ttl_ms = f"{key}:published:{dedupe}", _retention_ms()
    message_id = _publish_once(
        client,
        keys=[key, mark],
        args=[_min_id(), BODY_FIELD, body, _retention_ms(), max_length, mark_ttl_ms],
    )
    if message_id is None:
        raise QueueFull(
            f"Queue {name} holds {max_length} messages not yet acknowledged, its limit: "
            "retry once consumers have acked some."
        )
    QUEUE_MESSAGES.labels(event="published").inc()
    return redis_text(message_id)


def queue_trim(*, name: str) -> int:
    """Delete the messages older than the retention; returns how many."""
    return redis_client().xtrim(_key(name), minid=_min_id(), approximate=False)


def queue_claim(
    *, name: str, consumer: str, count: int = 1, block_ms: int = 0, in_process: bool = False
) -> list[QueueMessage]:
    """Messages now owned by `consumer`: first those other consumers held past the visibility
    timeout, then new ones (waiting up to `block_ms` for one if there are none).

    `in_process=True` says the consumer runs inside this process (not a remote bee claiming over
    the API): its messages are then handed back by `queue_release_claimed` when the process stops.
    """
    queue_validate_name(consumer, field="consumer")
    if not 1 <= count <= queues_settings.MAX_CLAIM_COUNT:
        raise QueueInputError(f"count must be between 1 and {queues_settings.MAX_CLAIM_COUNT}.", field="count")
    if not 0 <= block_ms <= queues_settings.MAX_BLOCK_MS:
        raise QueueInputError(f"block_ms must be between 0 and {queues_settings.MAX_BLOCK_MS}.", field="block_ms")
    key = _key(name)
    client = redis_client()
    client.xtrim(key, minid=_min_id(), approximate=False)
    _ensure_group(key)

    messages: list[QueueMessage] = []
    cursor = "0-0"
    # XAUTOCLAIM scans at most `count` pending entries per call: follow the cursor a few times.
    for _ in range(10):
        # A message taken over may be one whose earlier claim was refused (its WAIT timed out):
        # handed out only once a replica has it, as new ones are (core.redis.replicated).
        take_over = functools.partial(_take_over, key=key, consumer=consumer, start=cursor, count=count - len(messages))
        cursor_raw, entries, _deleted = replicated(client, take_over, hands_out=lambda reply: bool(reply[1]))
        messages += [_message(entry, redelivered=True) for entry in entries]
        cursor = cursor_raw.decode()
        if cursor == "0-0" or len(messages) >= count:
            break

    if in_process:
        _in_process_consumers.add((name, consumer))

    if len(messages) < count:
        # Redis reads BLOCK 0 as "forever": only block when asked to, and when nothing was taken over.
        block = block_ms if block_ms > 0 and not messages else None
        # [[stream, entries]], or None when nothing came: redis-py's default (legacy) reply shape.
        # Its type also lists the map of `legacy_responses=False`, which this client never sets.
        response = cast(
            "list[list[Any]] | None",
            replicated(
                client,
                lambda c: c.xreadgroup(_group(), consumer, {key: ">"}, count=count - len(messages), block=block),
            ),
        )
        for _stream, entries in response or []:
            messages += [_message(entry, redelivered=False) for entry in entries]
    redelivered = sum(message.redelivered for message in messages)
    QUEUE_MESSAGES.labels(event="redelivered").inc(redelivered)
    QUEUE_MESSAGES.labels(event="claimed").inc(len(messages) - redelivered)
    return messages


def _take_over(client: Redis, *, key: str, consumer: str, start: str, count: int) -> object:
    return client.xautoclaim(key, _group(), consumer, _visibility_ms(), start_id=start, count=count)


def queue_ack(*, name: str, ids: Iterable[str], consumer: str, dedupe: str | None = None) -> AckResult:
    """Ack messages `consumer` holds; each id is acked at most once (a repeated or stale ack, or
    one of a message another consumer holds, is in `not_pending`). An acked message is deleted.

    `dedupe` names the request (as for `queue_publish`): the same request again answers what the
    first one did (the messages it acked as acked), for a retention, and acks nothing more."""
    ids = list(dict.fromkeys(ids))
    if not ids:
        raise QueueInputError("ids must not be empty.", field="ids")
    if len(ids) > MAX_ACK_IDS:
        raise QueueInputError(f"ids: at most {MAX_ACK_IDS} per ack.", field="ids")
    for message_id in ids:
        if not _valid_message_id(message_id):
            raise QueueInputError(f"ids: {message_id!r} is not a message id.", field="ids")
    queue_validate_name(consumer, field="consumer")
    key = _key(name)
    client = redis_client()
    if dedupe is None:
        mark, mark_ttl_ms = f"{key}:ack-sent:{secrets.token_hex(8)}", _SENT_MARK_TTL_MS
    else:
        mark, mark_ttl_ms = f"{key}:acked:{dedupe}", _retention_ms()
    try:
        results = _ack(client, keys=[key, mark], args=[_group(), consumer or "", mark_ttl_ms, *ids])
    except ResponseError as exc:
        if "NOGROUP" in str(exc):
            return AckResult(acked=[], not_pending=ids)
        raise
    acked = [i for i, done in zip(ids, results, strict=True) if done == 1]
    QUEUE_MESSAGES.labels(event="acked").inc(len(acked))
    done = set(acked)
    return AckResult(acked=acked, not_pending=[i for i in ids if i not in done])


def queue_names() -> list[str]:
    prefix = queues_settings.KEY_PREFIX
    keys = redis_client().scan_iter(match=f"{prefix}*", count=1000, _type="stream")
    return sorted(k.decode()[len(prefix) :] for k in keys)


def queue_grouped_names() -> list[str]:
    """The queues that have a consumer group: the only ones that can hold claimed messages.

    Read from their index (a set, grown by every claim), not by a SCAN of the whole keyspace,
    which grows with everything else in Redis (sessions, caches, the board). Streams grouped
    before the index existed, or in a Redis that lost it, are found once by such a SCAN.
    """
    client = redis_client()
    prefix = queues_settings.KEY_PREFIX
    index = _grouped_index()
    if not client.exists(_grouped_index_mark()):
        keys = list(client.scan_iter(match=f"{prefix}*", count=1000, _type="stream"))
        with client.pipeline(transaction=True) as pipe:
            if keys:
                pipe.sadd(index, *keys)
                pipe.pexpire(index, _retention_ms())
            pipe.set(_grouped_index_mark(), "1", px=_retention_ms())
            pipe.execute()
    return sorted(redis_text(key)[len(prefix) :] for key in client.sscan_iter(index, count=1000))


def _unindex_ungrouped(name: str) -> None:
    client = redis_client()
    client.register_script(_UNINDEX_UNGROUPED)(keys=[_key(name), _grouped_index()], args=[_group()], client=client)


# Deletes a consumer only if it is still idle and holds nothing (checked again here, atomically:
# a consumer that claimed a moment ago, or holds messages, is kept; deleting one that holds
# messages would drop them from the pending list, and they would never be delivered again).
# KEYS: stream. ARGV: group, consumer, min idle ms.
_DELETE_IDLE_CONSUMER = """
local ok, consumers = pcall(redis.call, 'XINFO', 'CONSUMERS', KEYS[1], ARGV[1])
if not ok then return 0 end
for _, info in ipairs(consumers) do
  local fields = {}
  for i = 1, #info, 2 do fields[info[i]] = info[i + 1] end
  if fields['name'] == ARGV[2] then
    if tonumber(fields['pending']) == 0 and tonumber(fields['idle']) >= tonumber(ARGV[3]) then
      redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], ARGV[2])
      return 1
    end
    return 0
  end
end
return 0
"""


def queue_remove_idle_consumers(*, idle_seconds: float | None = None, names: Iterable[str] | None = None) -> int:
    """Remove consumers that claimed nothing for `idle_seconds` (QUEUES_CONSUMER_IDLE_SECONDS)
    and hold no message, so a queue's consumer list does not grow with every bee that ever read
    it. A silent consumer that still holds messages keeps them until the visibility timeout
    hands them to another (the recovery pass), and is removed on a later pass. Returns how many."""
    idle_ms = int((queues_settings.CONSUMER_IDLE_SECONDS if idle_seconds is None else idle_seconds) * 1000)
    client = redis_client()
    script = client.register_script(_DELETE_IDLE_CONSUMER)
    removed = 0
    for name in queue_grouped_names() if names is None else names:
        key = _key(name)
        try:
            consumers = client.xinfo_consumers(key, _group())
        except ResponseError:
            continue  # no group (yet, or any more)
        for consumer in consumers:
            if consumer["pending"] == 0 and consumer["idle"] >= idle_ms:
                removed += script(keys=[key], args=[_group(), consumer["name"], idle_ms], client=client)
    return removed


def queue_delete(*, name: str) -> None:
    """Drop the queue's stream, its messages and its consumer group (the queue was deleted)."""
    redis_client().delete(_key(name))
    _unindex_ungrouped(name)


def _requeue(key: str, *, min_idle_ms: int, consumer: str, deadline: float | None, batch: int = 100) -> int:
    client = redis_client()
    script = client.register_script(_REQUEUE)
    moved = 0
    while deadline is None or time.monotonic() < deadline:
        try:
            pending = client.xpending_range(
                key, _group(), min="-", max="+", count=batch, consumername=consumer or None, idle=min_idle_ms
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):
                return moved
            raise
        if not pending:
            break
        ids = [redis_text(entry["message_id"]) for entry in pending]
        moved += script(keys=[key], args=[_group(), min_idle_ms, consumer, *ids], client=client)
        if len(pending) < batch:
            break
    return moved


def queue_reclaim_stale(
    *, deadline: float | None = None, names: Iterable[str] | None = None, min_idle_ms: int | None = None
) -> int:
    """Put every message held longer than the visibility timeout (or `min_idle_ms`) back in its
    queue, for any consumer to claim as a new message. Stops at `deadline` (time.monotonic()).
    Returns the number of messages put back. Safe to run on several instances at once."""
    idle = _visibility_ms() if min_idle_ms is None else min_idle_ms
    indexed = names is None
    names = queue_grouped_names() if names is None else list(names)
    client = redis_client()
    total = 0
    # Which streams hold a message idle past the timeout: one round trip per chunk of streams,
    # not one per stream; only those are then re-delivered, one by one.
    for start in range(0, len(names), _STALE_CHECK_CHUNK):
        if deadline is not None and time.monotonic() >= deadline:
            break
        chunk = names[start : start + _STALE_CHECK_CHUNK]
        with client.pipeline(transaction=False) as pipe:
            for name in chunk:
                pipe.xpending_range(_key(name), _group(), min="-", max="+", count=1, idle=idle)
            replies = pipe.execute(raise_on_error=False)
        for name, reply in zip(chunk, replies, strict=True):
            if isinstance(reply, ResponseError):
                if "NOGROUP" not in str(reply):
                    raise reply
                if indexed:
                    _unindex_ungrouped(name)
                continue
            if reply and (deadline is None or time.monotonic() < deadline):
                total += _requeue(_key(name), min_idle_ms=idle, consumer="", deadline=deadline)
    return total


_STALE_CHECK_CHUNK = 500


def queue_release(*, name: str, consumer: str, deadline: float | None = None) -> int:
    """Hand back everything `consumer` holds (a consumer that stops): the messages are put back
    in the queue at once instead of waiting out the visibility timeout."""
    queue_validate_name(consumer, field="consumer")
    return _requeue(_key(name), min_idle_ms=0, consumer=consumer, deadline=deadline)


def queue_release_claimed(*, deadline: float | None = None) -> int:
    """Shutdown: hand back what this process's own consumers hold and have not acked. Messages
    claimed over the API belong to remote bees that are still working on them, so they stay."""
    released = 0
    for name, consumer in sorted(_in_process_consumers):
        if deadline is not None and time.monotonic() >= deadline:
            break
        released += queue_release(name=name, consumer=consumer, deadline=deadline)
        _in_process_consumers.discard((name, consumer))
    return released

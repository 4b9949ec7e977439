"""The hot history of a conversation in Redis: a sorted set of its turns scored by seq.

PostgreSQL is the record; this is the fast copy any instance reads. It can be lost at any time
(expiry after an hour unused, a Redis restart or flush), so every read checks it against the
conversation's `last_seq` from PostgreSQL and rebuilds what is missing. A head member (score 0)
marks the history as existing even before the first turn, so that "missing" means "lost".
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable
from typing import Any

from core.redis import redis_client
from hive.conf import hive_settings

logger = logging.getLogger(__name__)

HEAD = "head"

# Appends only to a history that exists: after a loss, a partial history (only the newest turns)
# would look like a whole one to a reader that does not compare it with PostgreSQL. One turn per
# seq: a retried append replaces the member with that score.
_APPEND = """
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('ZREMRANGEBYSCORE', KEYS[1], ARGV[2], ARGV[2])
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[3])
redis.call('EXPIRE', KEYS[1], ARGV[1])
return 1
"""

_READ = """
local items = redis.call('ZRANGE', KEYS[1], 0, -1, 'WITHSCORES')
if #items > 0 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return items
"""


def _key(conversation_id: Any) -> str:
    return f"{hive_settings.HOT_HISTORY_KEY_PREFIX}{conversation_id}:turns"


def _ttl() -> int:
    return int(hive_settings.HOT_HISTORY_TTL_SECONDS)


def turn_dict(turn: Any) -> dict[str, Any]:
    return {
        "seq": turn.seq,
        "role": turn.role,
        "content": turn.content,
        "created_at": turn.created_at.isoformat(),
    }


def _member(turn: dict[str, Any]) -> str:
    return json.dumps(turn, sort_keys=True, separators=(",", ":"))


def history_start(conversation_id: Any) -> None:
    client = redis_client()
    with client.pipeline(transaction=True) as pipe:
        pipe.zadd(_key(conversation_id), {HEAD: 0})
        pipe.expire(_key(conversation_id), _ttl())
        pipe.execute()


def history_append(conversation_id: Any, turn: dict[str, Any]) -> bool:
    """Add a committed turn; False when the history is gone (the next read rebuilds it)."""
    client = redis_client()
    script = client.register_script(_APPEND)
    return bool(script(keys=[_key(conversation_id)], args=[_ttl(), turn["seq"], _member(turn)], client=client))


def history_read(conversation_id: Any) -> dict[int, dict[str, Any]] | None:
    """The turns by seq, or None when the history is missing."""
    client = redis_client()
    script = client.register_script(_READ)
    items = script(keys=[_key(conversation_id)], args=[_ttl()], client=client)
    if not items:
        return None
    turns: dict[int, dict[str, Any]] = {}
    for member, score in zip(items[::2], items[1::2], strict=True):
        seq = int(float(score))
        if seq >= 1:
            turns[seq] = json.loads(member)
    return turns


def history_rebuild(conversation_id: Any, turns: Iterable[dict[str, Any]], *, chunk: int = 500) -> None:
    """Write the turns read from PostgreSQL. ZADD without deleting first: a turn another instance
    appended meanwhile is kept (members of one seq are identical, so re-adding is a no-op)."""
    client = redis_client()
    key = _key(conversation_id)
    with client.pipeline(transaction=True) as pipe:
        pipe.zadd(key, {HEAD: 0})
        batch: dict[str, float] = {}
        for turn in turns:
            batch[_member(turn)] = turn["seq"]
            if len(batch) >= chunk:
                pipe.zadd(key, batch)
                batch = {}
        if batch:
            pipe.zadd(key, batch)
        pipe.expire(key, _ttl())
        pipe.execute()


def history_delete(conversation_id: Any) -> None:
    redis_client().delete(_key(conversation_id))


def _channel(conversation_id: Any) -> str:
    return f"{hive_settings.HOT_HISTORY_KEY_PREFIX}{conversation_id}:changed"


def turns_notify(conversation_id: Any) -> None:
    """Wake the readers waiting for this conversation's turns, on every instance."""
    redis_client().publish(_channel(conversation_id), "1")


def turns_wait(conversation_id: Any, *, timeout: float, ready: Callable[[], bool], recheck: float = 5.0) -> bool:
    """Wait until `ready()` (a PostgreSQL read) is true or `timeout` seconds passed; True if ready.

    Subscribed before the first check, so a change committed in between is not missed. A
    notification only says "look again": PostgreSQL is read after each, and every `recheck`
    seconds regardless, in case one was lost (a Redis failover, a publish that failed after
    commit).
    """
    if ready():
        return True
    end = time.monotonic() + timeout
    pubsub = redis_client().pubsub(ignore_subscribe_messages=True)
    try:
        pubsub.subscribe(_channel(conversation_id))
        while True:
            if ready():
                return True
            remaining = end - time.monotonic()
            if remaining <= 0:
                return False
            pubsub.get_message(timeout=min(remaining, recheck))
    finally:
        pubsub.close()

"""Hive flows: conversations (turns), the board, bee message queues and bee decisions."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict
from typing import Any

from chaos.flows.base import CheckResult, Flow, User, body_field
from chaos.recorder import ABANDONED, ACKED, REJECTED
from lifecycle.queues.conf import queues_settings


def _marker(rng: random.Random, prefix: str) -> str:
    return f"{prefix}-{rng.getrandbits(48):012x}"


class ConversationFlow(Flow):
    """Users talk to the Queen AI; sometimes two turns of one conversation are sent at once
    (through different instances), which must both be kept with gap-free seqs. Users wait for
    the Queen's replies (the bounded long poll); after the run every acknowledged turn must have
    exactly one reply within REPLY_BOUND seconds of the load's end."""

    name = "conversations"
    requires = (
        "POST /api/conversations/",
        "POST /api/conversations/{}/turns/",
        "GET /api/conversations/{}/",
        "GET /api/conversations/{}/turns/",
    )
    weight = 2.0
    # Seconds after the load stopped within which every reply must be there: the stalled-job
    # window, a recovery period, the job polling and the generation, with room for backoff.
    REPLY_BOUND = 60.0
    WAIT_SECONDS = 5

    def user_step(self, user: User, rng: random.Random) -> bool:
        conversations = user.state.setdefault("conversations", [])
        if not conversations or rng.random() < 0.08:
            op = user.api.call(self.name, "create", "POST", "/api/conversations/", json={"title": "chaos"},
                               ok=(201,), idempotency_key=True)  # fmt: skip
            if op.outcome == ACKED:
                conversations.append(str(body_field(op.body, "id")))
            return True
        conversation = rng.choice(conversations)
        if rng.random() < 0.15:
            threads = [
                threading.Thread(target=self._turn, args=(user, conversation, _marker(rng, "turn"), rng.random()))
                for _ in range(2)
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
        else:
            op = self._turn(user, conversation, _marker(rng, "turn"))
            if op.outcome == ACKED and rng.random() < 0.3:
                # Wait for the Queen as a client does: one bounded long poll, no loop.
                seq = body_field(op.body, "seq")
                user.api.call(self.name, "wait", "GET",
                              f"/api/conversations/{conversation}/turns/?after={seq}&wait={self.WAIT_SECONDS}",
                              write=False)  # fmt: skip
        return True

    def _turn(self, user: User, conversation: str, content: str, r: float = 0.0):
        # Only user turns: the Queen's are the service's to write.
        return user.api.call(self.name, "turn", "POST", f"/api/conversations/{conversation}/turns/",
                             json={"role": "user", "content": content}, ok=(201,), idempotency_key=True,
                             data={"conversation": conversation, "content": content, "user": user.name})  # fmt: skip

    def finish(self) -> None:
        """Wait, up to REPLY_BOUND from now, for the replies of every acknowledged turn."""
        from hive.models import Reply

        conversations = {op.data["conversation"] for op in self.acked("turn")}
        deadline = time.monotonic() + self.REPLY_BOUND
        self.replies_settled_in: float | None = None
        started = time.monotonic()
        while time.monotonic() < deadline:
            if not Reply.objects.filter(conversation_id__in=conversations, status="pending").exists():
                self.replies_settled_in = time.monotonic() - started
                return
            time.sleep(0.5)

    def check_replies(self, result: CheckResult) -> dict[str, int]:
        """Every acknowledged user turn has exactly one reply from the Queen (an assistant turn
        answering it); a reply still pending or failed after the bound is a violation."""
        from hive.models import Reply, Turn

        acked = self.acked("turn")
        contents = {op.data["content"]: op for op in acked}
        users = {
            t.content: t for t in Turn.objects.filter(role="user", content__in=list(contents)).select_related("reply")
        }
        answers = Counter(
            Turn.objects.filter(role="assistant", answers__in=[t.pk for t in users.values()]).values_list(
                "answers_id", flat=True
            )
        )
        missing = failed = pending = 0
        for content in contents:
            turn = users.get(content)
            if turn is None:
                continue  # the turn itself is lost: reported by the turn check
            n = answers.get(turn.pk, 0)
            if n == 0:
                missing += 1
                status = getattr(getattr(turn, "reply", None), "status", "none")
                failed += status == Reply.Status.FAILED
                pending += status == Reply.Status.PENDING
                result.lost += 1
                result.violate(f"turn {content}: no reply from the Queen (reply {status})")
            elif n > 1:
                result.duplicated += n - 1
                result.violate(f"turn {content}: {n} replies from the Queen")
        return {"replies_missing": missing, "replies_failed": failed, "replies_pending": pending}

    def check(self) -> CheckResult:
        from hive.models import Turn

        result = CheckResult()
        turns = self.ops("turn")
        acked = [op for op in turns if op.outcome == ACKED]
        result.acknowledged = len(acked) + len(self.acked("create"))
        by_conversation: dict[str, list] = defaultdict(list)
        for op in turns:
            by_conversation[op.data["conversation"]].append(op)
        users = {u.name: u for u in self.run.users}
        gaps = 0
        api_mismatch = 0
        for conversation, ops in by_conversation.items():
            rows = list(Turn.objects.filter(conversation_id=conversation).order_by("seq").values("seq", "content"))
            seqs = [r["seq"] for r in rows]
            if seqs != list(range(1, len(seqs) + 1)):
                gaps += 1
                result.violate(f"conversation {conversation}: seqs not gap-free: {seqs[:20]}")
            counts = Counter(r["content"] for r in rows)
            seq_of = {r["content"]: r["seq"] for r in rows}
            for op in ops:
                n = counts.get(op.data["content"], 0)
                if op.outcome == ACKED:
                    if n == 0:
                        result.lost += 1
                        result.violate(f"turn lost: {op.id} {op.data['content']} (acked seq {op.body})")
                    elif seq_of[op.data["content"]] != body_field(op.body, "seq"):
                        result.violate(
                            f"turn {op.id} acked with seq {op.body} but stored at {seq_of[op.data['content']]}"
                        )
                if n > 1:
                    result.duplicated += n - 1
                    result.violate(f"turn stored {n} times: {op.data['content']}")
                if op.outcome == REJECTED and n:
                    result.violate(f"turn refused but stored: {op.data['content']}")
            # What users read (hot history in Redis, rebuilt from PostgreSQL) equals the durable record.
            owner = users.get(ops[0].data["user"])
            if owner is not None:
                read = owner.api.call(self.name, "read", "GET", f"/api/conversations/{conversation}/", write=False)
                served = [(t["seq"], t["content"]) for t in (body_field(read.body, "turns") or [])]
                if read.outcome != ACKED or served != [(r["seq"], r["content"]) for r in rows]:
                    api_mismatch += 1
                    result.violate(f"conversation {conversation}: API returned {len(served)} turns, DB has {len(rows)}")
        # Each acknowledged turn is also an analytics event (outbox, then BigQuery): exactly once.
        from chaos import analytics

        # Quoted: the user turn's event holds "marker"; the Queen's reply quotes the marker too,
        # but between typographic quotes, so it is not counted as the turn's event.
        found = analytics.event_counts(
            self.run, kind="llm_conversation", markers=[f'"{op.data["content"]}"' for op in turns]
        )
        events_missing = events_duplicated = 0
        for op in turns:
            n = found["counts"].get(f'"{op.data["content"]}"', 0)
            if op.outcome == ACKED and n == 0:
                events_missing += 1
                result.lost += 1
                result.violate(f"turn {op.data['content']}: no llm_conversation event in {found['where']}")
            elif n > 1:
                events_duplicated += 1
                result.duplicated += n - 1
                result.violate(f"turn {op.data['content']}: {n} llm_conversation events in {found['where']}")
        replies = self.check_replies(result)
        result.details = {
            **replies,
            "replies_settled_in_s": round(getattr(self, "replies_settled_in", None) or -1, 1),
            "analytics_checked_in": found["where"],
            "analytics_events_missing": events_missing,
            "analytics_events_duplicated": events_duplicated,
            "conversations": len(by_conversation),
            "turns_acked": len(acked),
            "turns_abandoned": sum(1 for op in turns if op.outcome == ABANDONED),
            "conversations_with_gaps": gaps,
            "conversations_read_mismatch": api_mismatch,
        }
        return result


class BoardFlow(Flow):
    name = "board"
    requires = ("POST /api/board/", "GET /api/board/")
    weight = 1.0

    def user_step(self, user: User, rng: random.Random) -> bool:
        body = _marker(rng, "post")
        user.api.call(self.name, "post", "POST", "/api/board/", json={"body": body}, ok=(201,),
                      idempotency_key=True, data={"body": body})  # fmt: skip
        if rng.random() < 0.2:
            user.api.call(self.name, "list", "GET", "/api/board/?limit=20", write=False)
        return True

    def check(self) -> CheckResult:
        result = CheckResult()
        posts = self.ops("post")
        reader = (self.run.users or self.run.staff)[0]
        bodies: Counter[str] = Counter()
        offset: int | None = 0
        pages = 0
        while offset is not None and pages < 1000:
            op = reader.api.call(self.name, "list", "GET", f"/api/board/?limit=100&offset={offset}", write=False)
            if op.outcome != ACKED:
                result.violate(f"board listing failed at offset {offset}: {op.status}")
                break
            bodies.update(item["body"] for item in body_field(op.body, "items") or [])
            offset = body_field(op.body, "next_offset")
            pages += 1
        for op in posts:
            n = bodies.get(op.data["body"], 0)
            if op.outcome == ACKED and n == 0:
                result.lost += 1
                result.violate(f"board post lost: {op.id} {op.data['body']}")
            if n > 1:
                result.duplicated += n - 1
                result.violate(f"board post listed {n} times: {op.data['body']}")
        result.acknowledged = sum(1 for op in posts if op.outcome == ACKED)
        result.details = {"posts_acked": result.acknowledged, "posts_listed": sum(bodies.values()), "pages": pages}
        return result


class QueueFlow(Flow):
    """Bees publish to a queue and consume from it; some consumers "crash" after claiming (never
    ack), so their messages must come back to another consumer after the visibility timeout."""

    name = "queues"
    requires = ("POST /api/queues/", "POST /api/queues/{}/", "POST /api/queues/{}/claim", "POST /api/queues/{}/ack")
    weight = 2.0
    queue = "chaos-bees"

    def setup(self) -> None:
        """The first user owns the queue and every other user is a member; staff are not, so
        they must not be able to reach it."""
        owner, *members = self.run.users
        op = owner.api.call(self.name, "create", "POST", "/api/queues/",
                            json={"name": self.queue, "members": [m.name for m in members]}, ok=(201,),
                            idempotency_key=True)  # fmt: skip
        if op.outcome != ACKED:
            raise RuntimeError(f"creating the queue failed: {op.status} {op.body}")

    def __init__(self, run: Any):
        super().__init__(run)
        self.acks: Counter[str] = Counter()  # original message id -> successful acks
        self.deliveries: Counter[str] = Counter()  # body -> deliveries
        self.bodies: dict[str, str] = {}  # message id -> body
        self.origin: dict[str, str] = {}  # a requeued copy's id -> the id it was requeued from

    def user_step(self, user: User, rng: random.Random) -> bool:
        if rng.random() < 0.5:
            body = _marker(rng, "msg")
            user.api.call(self.name, "publish", "POST", f"/api/queues/{self.queue}/", json={"body": body},
                          ok=(201,), idempotency_key=True, data={"body": body})  # fmt: skip
        else:
            self._consume(user, f"{user.name}-c", crash=rng.random() < 0.05)
        return True

    def _consume(self, user: User, consumer: str, *, crash: bool = False, count: int = 5) -> int:
        claim = user.api.call(self.name, "claim", "POST", f"/api/queues/{self.queue}/claim",
                              json={"consumer": consumer, "count": count, "block_ms": 0}, write=False)  # fmt: skip
        messages = body_field(claim.body, "messages") or [] if claim.outcome == ACKED else []
        with self.lock:
            for message in messages:
                self.bodies[message["id"]] = message["body"]
                self.deliveries[message["body"]] += 1
                if message.get("requeued_from"):
                    self.origin[message["id"]] = message["requeued_from"]
        if not messages or crash:
            return len(messages)
        ids = [m["id"] for m in messages]
        ack = user.api.call(self.name, "ack", "POST", f"/api/queues/{self.queue}/ack",
                            json={"ids": ids, "consumer": consumer}, data={"ids": ids},
                            idempotency_key=True)  # fmt: skip
        if ack.outcome == ACKED:
            with self.lock:
                for message_id in body_field(ack.body, "acked") or []:
                    self.acks[self._original(message_id)] += 1
        return len(messages)

    def _original(self, message_id: str) -> str:
        seen = set()
        while message_id in self.origin and message_id not in seen:
            seen.add(message_id)
            message_id = self.origin[message_id]
        return message_id

    def _acked_bodies(self) -> Counter[str]:
        with self.lock:
            return Counter({self.bodies.get(i, i): n for i, n in self.acks.items()})

    def finish(self) -> None:
        """Consume until every published message was acked (taken-over ones need the visibility
        timeout to pass first)."""
        published = {op.data["body"] for op in self.acked("publish")}
        consumer = (self.run.users or self.run.staff)[0]
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline:
            missing = published - set(self._acked_bodies())
            if not missing:
                return
            if self._consume(consumer, "chaos-final", count=100) == 0:
                time.sleep(1)

    def check(self) -> CheckResult:
        result = CheckResult()
        publishes = self.ops("publish")
        acked = [op for op in publishes if op.outcome == ACKED]
        result.acknowledged = len(acked)
        # One logical message = one original stream id (a requeued copy points back to it).
        originals: dict[str, set[str]] = {}
        for message_id, body in self.bodies.items():
            originals.setdefault(body, set()).add(self._original(message_id))
        for op in publishes:
            body = op.data["body"]
            ids = originals.get(body, set())
            acks = sum(self.acks.get(i, 0) for i in ids)
            if op.outcome == ACKED and acks == 0:
                result.lost += 1
                result.violate(f"message never delivered and acked: {body}")
            if len(ids) > 1:
                result.duplicated += len(ids) - 1
                result.violate(f"message published {len(ids)} times (a retried publish enqueued again): {body}")
            for message_id in ids:
                if self.acks.get(message_id, 0) > 1:
                    result.duplicated += self.acks[message_id] - 1
                    result.violate(f"message {message_id} acked {self.acks[message_id]} times: {body}")
        # Published more than once (a retried publish must not enqueue twice): read the stream.
        from core.redis import redis_client

        key = f"{queues_settings.KEY_PREFIX}{self.queue}"
        pending = redis_client().xpending(key, queues_settings.GROUP)
        if pending and pending.get("pending"):
            result.violate(f"{pending['pending']} messages still pending (claimed, never acked) at the end")
        # Not a member: the queue does not exist for them, and they read nothing from it.
        if self.run.staff:
            staff = self.run.staff[0]
            outsider = staff.api.call(self.name, "outsider_claim", "POST", f"/api/queues/{self.queue}/claim",
                                      json={"consumer": "outsider"}, ok=(), definitive=(404,), write=False)  # fmt: skip
            if outsider.status != 404:
                result.violate(f"a non-member's claim was answered {outsider.status} {outsider.body}")
        result.details = {
            "published_acked": len(acked),
            "published_abandoned": sum(1 for op in publishes if op.outcome == ABANDONED),
            "delivered": sum(self.deliveries.values()),
            "redelivered": sum(n - 1 for n in self.deliveries.values() if n > 1),
            "acked": sum(self.acks.values()),
        }
        return result


class DecisionFlow(Flow):
    """Bee decisions are analytics events: each acknowledged one must reach the outbox (and
    BigQuery, when the exporter runs) exactly once."""

    name = "decisions"
    requires = ("POST /api/bees/{}/decisions/",)
    weight = 1.0

    def user_step(self, user: User, rng: random.Random) -> bool:
        marker = _marker(rng, "decision")
        bee = rng.choice(["scout", "forager", "guard", "nurse"])
        user.api.call(self.name, "record", "POST", f"/api/bees/{bee}/decisions/",
                      json={"decision": "forage", "context": {"chaos": marker}}, ok=(202,),
                      idempotency_key=True, data={"marker": marker, "bee": bee})  # fmt: skip
        return True

    def check(self) -> CheckResult:
        from chaos import analytics

        result = CheckResult()
        ops = self.ops("record")
        acked = [op for op in ops if op.outcome == ACKED]
        result.acknowledged = len(acked)
        found = analytics.event_counts(self.run, kind="bee_decision", markers=[op.data["marker"] for op in ops])
        for op in ops:
            n = found["counts"].get(op.data["marker"], 0)
            if op.outcome == ACKED and n == 0:
                result.lost += 1
                result.violate(f"bee decision {op.data['marker']} not in {found['where']}")
            elif n > 1:
                result.duplicated += n - 1
                result.violate(f"bee decision {op.data['marker']} {n} times in {found['where']}")
            elif op.outcome == REJECTED and n:
                result.violate(f"bee decision {op.data['marker']} refused but recorded")
        result.details = {"acked": len(acked), "checked_in": found["where"]}
        return result

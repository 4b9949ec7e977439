"""Governance flows: staking, the private sale, votes, and staff closing and executing proposals
from several clients at once."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from chaos.flows.base import CheckResult, Flow, User, body_field
from chaos.recorder import ABANDONED, ACKED, REJECTED


def _iso(delta_seconds: float) -> str:
    return (datetime.now(UTC) + timedelta(seconds=delta_seconds)).isoformat()


def _model(app_label: str, *fields: str):
    """The model of `app_label` that has all `fields` (each may be `a|b` alternatives)."""
    from django.apps import apps

    for model in apps.get_app_config(app_label).get_models():
        names = {f.name for f in model._meta.get_fields()}
        if all(any(alt in names for alt in spec.split("|")) for spec in fields):
            return model
    raise LookupError(f"no model in {app_label} with fields {fields}")


def _field(model, *names: str) -> str:
    present = {f.name for f in model._meta.get_fields()}
    for name in names:
        if name in present:
            return name
    raise LookupError(f"{model.__name__} has none of {names}")


def pay(flow: Flow, purchase: Any, *, status: str = "paid", reference: str | None = None) -> Any:
    """Play the payment processor: deliver its signed verdict on `purchase` to the webhook, as
    the processor does (same bytes and signature on every retry; 503s are retried)."""
    import json as _json

    from governance import payments
    from governance.conf import governance_settings

    reference = reference or f"chaos-pay-{purchase}-{status}"
    raw = _json.dumps({"purchase": purchase, "status": status, "reference": reference}).encode()
    signature = payments.sign(raw, secret=governance_settings.PAYMENT_WEBHOOK_SECRET)
    assert flow.run.processor is not None
    return flow.run.processor.call(flow.name, "pay", "POST", "/api/payments/webhook", raw=raw,
                                   headers={payments.HEADER: signature}, ok=(200,), definitive=(409,),
                                   data={"purchase": purchase, "status": status, "reference": reference})  # fmt: skip


class StakeFlow(Flow):
    """Users stake (each stake of one user has a distinct amount, so a duplicate shows) and
    sometimes try to unstake a position that is still locked (refused, nothing changes)."""

    name = "stakes"
    requires = ("POST /api/stakes/", "POST /api/stakes/{}/unstake/")
    weight = 1.0

    def stake(self, user: User) -> bool:
        with user.lock:
            n = user.state["stake_n"] = user.state.get("stake_n", 0) + 1
        amount = str(100 + n)
        op = user.api.call(self.name, "stake", "POST", "/api/stakes/", json={"amount": amount, "lock_days": 30},
                           ok=(200, 201), idempotency_key=True, data={"user": user.name, "amount": amount})  # fmt: skip
        if op.outcome == ACKED:
            user.state.setdefault("stakes", []).append(body_field(op.body, "id"))
            user.state["staked"] = True
        return op.outcome == ACKED

    # Each user buys this many tokens once, paid through the webhook, before the load starts:
    # enough for every stake of a 10-minute run (stakes are 100 + n).
    funding = "1000000"

    def setup(self) -> None:
        staff = self.run.staff[0]
        sale = staff.api.call(self.name, "funding_sale", "POST", "/api/sales/", json={
            "name": "chaos funding", "token_price": "1", "allocation": "100000000", "per_buyer_cap": "10000000",
            "starts_at": _iso(-60), "ends_at": _iso(24 * 3600)}, ok=(201,), idempotency_key=True)  # fmt: skip
        if sale.outcome != ACKED:
            raise RuntimeError(f"the funding sale was refused: {sale.status} {sale.body}")
        for user in self.run.users:
            wallet = "0x" + f"{abs(hash(user.name)) % 16**40:040x}"
            buy = user.api.call(self.name, "fund", "POST", "/api/purchases/", json={
                "sale": body_field(sale.body, "id"), "wallet": wallet, "amount": self.funding},
                ok=(201,), idempotency_key=True, data={"user": user.name})  # fmt: skip
            if buy.outcome != ACKED or pay(self, body_field(buy.body, "id")).outcome != ACKED:
                raise RuntimeError(f"funding {user.name} failed: {buy.status} {buy.body}")
        # Voters need an active stake before they can vote.
        for user in self.run.users:
            self.stake(user)

    def user_step(self, user: User, rng: random.Random) -> bool:
        stakes = user.state.get("stakes") or []
        if rng.random() < 0.03:
            # More than anyone owns: refused, and nothing is staked.
            user.api.call(self.name, "stake_unfunded", "POST", "/api/stakes/",
                          json={"amount": "99999999999999999999", "lock_days": 1}, ok=(), definitive=(409,),
                          idempotency_key=True, data={"user": user.name})  # fmt: skip
            return True
        if len(stakes) >= 2 and rng.random() < 0.2:
            stake_id = rng.choice(stakes)
            user.api.call(self.name, "unstake_locked", "POST", f"/api/stakes/{stake_id}/unstake/", ok=(),
                          definitive=(409,), data={"user": user.name, "stake": stake_id})  # fmt: skip
            return True
        return self.stake(user)

    def check(self) -> CheckResult:
        from django.contrib.auth import get_user_model

        result = CheckResult()
        model = _model("governance", "amount", "unlocks_at")
        owner = _field(model, "owner", "user", "staker")
        users = {
            u.username: u.pk for u in get_user_model().objects.filter(username__in=[u.name for u in self.run.users])
        }
        rows = defaultdict(list)
        for row in model.objects.filter(**{f"{owner}_id__in": users.values()}).values("id", owner, "amount", "status"):
            rows[row[owner]].append(row)
        stakes = self.ops("stake")
        result.acknowledged = sum(1 for op in stakes if op.outcome == ACKED)
        for op in stakes:
            mine = [r for r in rows[users[op.data["user"]]] if r["amount"] == Decimal(op.data["amount"])]
            if op.outcome == ACKED and not any(str(r["id"]) == str(body_field(op.body, "id")) for r in mine):
                result.lost += 1
                result.violate(f"stake lost: {op.data} id {body_field(op.body, 'id')}")
            if len(mine) > 1:
                result.duplicated += len(mine) - 1
                result.violate(f"stake stored {len(mine)} times: {op.data}")
        by_id = {str(r["id"]): r for rs in rows.values() for r in rs}
        for op in self.ops("unstake_locked"):
            row = by_id.get(str(op.data["stake"]))
            if op.outcome == REJECTED and row is not None and row["status"] != "active":
                result.violate(f"unstake refused but position {op.data['stake']} is {row['status']}")
            if op.outcome == ACKED:
                result.violate(f"a position locked for 30 days was unstaked: {op.data}")
        unfunded = self.ops("stake_unfunded")
        for op in unfunded:
            if op.outcome == ACKED or (
                op.outcome == REJECTED and body_field(op.body, "error") != "insufficient_balance"
            ):
                result.violate(f"a stake beyond the balance was answered {op.status} {op.body}")
        if model.objects.filter(amount=Decimal("99999999999999999999")).exists():
            result.violate("a stake beyond every balance was stored")
        result.details = {
            "stakes_acked": result.acknowledged,
            "unstakes_refused": len(self.ops("unstake_locked")),
            "unfunded_stakes_refused": sum(1 for op in unfunded if op.outcome == REJECTED),
        }
        return result


class PurchaseFlow(Flow):
    """Buyers race for a small allocation with Idempotency-Keys; each purchase uses a wallet of
    its own, so a purchase stored twice (a retry applied twice) is visible in the table."""

    name = "purchases"
    requires = ("POST /api/sales/", "POST /api/purchases/")
    weight = 1.5
    price = "0.50"
    allocation = 3000
    cap = 600

    def __init__(self, run: Any):
        super().__init__(run)
        self.sales: list[int | str] = []
        self.refusals: Counter[Any] = Counter()

    def _new_sale(self, staff: User) -> None:
        payload = {
            "token_price": self.price,
            "allocation": str(self.allocation),
            "per_buyer_cap": str(self.cap),
            "starts_at": _iso(-60),
            "ends_at": _iso(24 * 3600),
        }
        op = staff.api.call(self.name, "sale", "POST", "/api/sales/", json=payload, ok=(200, 201),
                            idempotency_key=True, data=payload)  # fmt: skip
        if op.outcome == ACKED:
            with self.lock:
                self.sales.append(body_field(op.body, "id"))

    def setup(self) -> None:
        self._new_sale(self.run.staff[0])

    def staff_step(self, staff: User, rng: random.Random) -> bool:
        # A new round once buyers are being refused a lot on the current one (sold out or caps).
        if staff is self.run.staff[0] and self.sales and self.refusals[self.sales[-1]] >= 8:
            self._new_sale(staff)
            return True
        return False

    def user_step(self, user: User, rng: random.Random) -> bool:
        if not self.sales:
            return False
        sale = self.sales[-1]
        wallet = "0x" + f"{rng.getrandbits(160):040x}"
        amount = str(rng.randint(5, 40))
        op = user.api.call(self.name, "buy", "POST", "/api/purchases/",
                           json={"sale": sale, "wallet": wallet, "amount": amount}, ok=(201,), definitive=(409,),
                           idempotency_key=True, data={"user": user.name, "sale": sale, "wallet": wallet,
                                                       "amount": amount})  # fmt: skip
        if op.outcome == REJECTED:
            with self.lock:
                self.refusals[sale] += 1
        elif op.outcome == ACKED:
            # Most buyers pay; some payments fail (the reservation is released) and some
            # checkouts are abandoned (the worker expires them). Some deliveries come twice.
            r = rng.random()
            if r < 0.8:
                purchase = body_field(op.body, "id")
                for _ in range(2 if rng.random() < 0.15 else 1):
                    pay(self, purchase)
            elif r < 0.9:
                pay(self, body_field(op.body, "id"), status="failed")
        return True

    def check(self) -> CheckResult:
        result = CheckResult()
        purchase = _model("governance", "wallet|wallet_address", "tokens")
        sale_model = _model("governance", "allocation", "per_buyer_cap")
        wallet_f = _field(purchase, "wallet", "wallet_address")
        buyer_f = _field(purchase, "buyer", "user", "owner")
        sale_f = _field(purchase, "sale", "round")
        rows = list(
            purchase.objects.filter(**{f"{sale_f}_id__in": self.sales}).values(
                "id", wallet_f, buyer_f, sale_f, "tokens", "status"
            )
        )
        # What holds tokens of an allocation: paid or still reserved (failed and expired gave
        # theirs back).
        holding = [r for r in rows if r["status"] in ("pending", "confirmed")]
        by_wallet: dict[str, list] = defaultdict(list)
        for row in rows:
            by_wallet[row[wallet_f].lower()].append(row)
        buys = self.ops("buy")
        result.acknowledged = sum(1 for op in buys if op.outcome == ACKED)
        for op in buys:
            stored = by_wallet.get(op.data["wallet"], [])
            if op.outcome == ACKED:
                if not any(str(r["id"]) == str(body_field(op.body, "id")) for r in stored):
                    result.lost += 1
                    result.violate(f"purchase lost: {op.data['wallet']} id {body_field(op.body, 'id')}")
                elif Decimal(str(body_field(op.body, "tokens"))) != stored[0]["tokens"]:
                    result.violate(f"purchase {op.data['wallet']}: acked {op.body} but stored {stored[0]['tokens']}")
            if len(stored) > 1:
                result.duplicated += len(stored) - 1
                result.violate(f"purchase stored {len(stored)} times (retried key applied twice?): {op.data['wallet']}")
            if op.outcome == REJECTED and stored:
                result.violate(f"purchase refused ({op.status}) but stored: {op.data['wallet']}")
        oversold = 0
        for sale in sale_model.objects.filter(pk__in=self.sales):
            sold = sum((r["tokens"] for r in holding if r[sale_f] == sale.pk), Decimal(0))
            if sold > sale.allocation:
                oversold += 1
                result.violate(f"sale {sale.pk} oversold: {sold} > {sale.allocation}")
            if sold != sale.sold:
                result.violate(f"sale {sale.pk}: sold is {sale.sold} but its paid and reserved purchases hold {sold}")
            per_buyer: Counter = Counter()
            for r in holding:
                if r[sale_f] == sale.pk:
                    per_buyer[r[buyer_f]] += r["tokens"]
            for buyer, tokens in per_buyer.items():
                if tokens > sale.per_buyer_cap:
                    result.violate(f"sale {sale.pk}: buyer {buyer} over the cap: {tokens} > {sale.per_buyer_cap}")
        status_of = {str(r["id"]): r["status"] for r in rows}
        pays = self.ops("pay")
        for op in pays:
            now = status_of.get(str(op.data["purchase"]))
            if op.outcome == ACKED and op.data["status"] == "paid" and now != "confirmed":
                result.lost += 1
                result.violate(
                    f"payment {op.data['reference']} acknowledged but purchase {op.data['purchase']} is {now}"
                )
            if op.outcome == ACKED and op.data["status"] == "failed" and now != "failed":
                result.violate(f"failed payment {op.data['reference']} acknowledged but purchase is {now}")
        result.details = {
            "payments_acked": sum(1 for op in pays if op.outcome == ACKED),
            "payments_repeated": sum(
                1 for op in pays if op.outcome == ACKED and body_field(op.body, "changed") is False
            ),
            "purchases_by_status": dict(Counter(r["status"] for r in rows)),
            "sales": len(self.sales),
            "purchases_acked": result.acknowledged,
            "purchases_refused": sum(1 for op in buys if op.outcome == REJECTED),
            "purchases_abandoned": sum(1 for op in buys if op.outcome == ABANDONED),
            "oversold_sales": oversold,
        }
        return result


class LedgerFlow(Flow):
    """No user step: after the run, the token accounts and their ledger are checked for every
    user of the run. No balance is negative, each balance is the sum of its ledger entries and
    what GET /api/balance/ answers, no purchase is credited twice, every confirmed purchase once."""

    name = "ledger"
    requires = ("GET /api/balance/", "POST /api/payments/webhook")
    weight = 0.0

    def check(self) -> CheckResult:
        from django.contrib.auth import get_user_model
        from django.db.models import Count, Sum

        from governance.models import LedgerEntry, Purchase, TokenAccount

        result = CheckResult()
        people = self.run.users + self.run.staff
        ids = dict(get_user_model().objects.filter(username__in=[u.name for u in people]).values_list("username", "pk"))
        accounts = dict(TokenAccount.objects.filter(user_id__in=ids.values()).values_list("user_id", "available"))
        sums = dict(
            LedgerEntry.objects.filter(user_id__in=ids.values())
            .values_list("user_id")
            .annotate(total=Sum("amount"))
            .values_list("user_id", "total")
        )
        for user in people:
            pk = ids[user.name]
            available = accounts.get(pk, Decimal(0))
            if available < 0:
                result.violate(f"{user.name}: negative balance {available}")
            if sums.get(pk, Decimal(0)) != available:
                result.violate(f"{user.name}: balance {available} but the ledger sums to {sums.get(pk, 0)}")
            if user.api is None:
                continue
            op = user.api.call(self.name, "balance", "GET", "/api/balance/", write=False)
            served = body_field(op.body, "available")
            if op.outcome != ACKED or Decimal(str(served)) != available:
                result.violate(f"{user.name}: GET /api/balance/ says {served} ({op.status}), the account {available}")
        twice = LedgerEntry.objects.filter(reason="purchase_confirmed").values("purchase").annotate(n=Count("id"))
        for row in twice.filter(n__gt=1):
            result.double_executions += 1
            result.violate(f"purchase {row['purchase']} credited {row['n']} times")
        credited = set(LedgerEntry.objects.filter(reason="purchase_confirmed").values_list("purchase_id", flat=True))
        confirmed = set(Purchase.objects.filter(status="confirmed").values_list("pk", flat=True))
        for pk in sorted(confirmed - credited)[:10]:
            result.lost += 1
            result.violate(f"purchase {pk} is confirmed but was never credited")
        for pk in sorted(credited - confirmed)[:10]:
            result.violate(f"purchase {pk} was credited but is not confirmed")
        result.acknowledged = len(confirmed)
        result.details = {
            "accounts": len(accounts),
            "negative_balances": sum(1 for v in accounts.values() if v < 0),
            "ledger_entries": LedgerEntry.objects.filter(user_id__in=ids.values()).count(),
            "confirmed_purchases": len(confirmed),
        }
        return result


@dataclass
class Proposal:
    id: Any
    close_at: float
    closers: set[str] = field(default_factory=set)
    executors: set[str] = field(default_factory=set)
    close_started: threading.Event = field(default_factory=threading.Event)


class ProposalFlow(Flow):
    """Staff keep proposals open for a few seconds; users vote (sometimes twice at once); when a
    proposal's window ends every staff client closes and executes it at the same moment."""

    name = "proposals"
    requires = (
        "POST /api/proposals/",
        "POST /api/proposals/{}/open/",
        "POST /api/proposals/{}/close/",
        "POST /api/proposals/{}/execute/",
        "POST /api/proposals/{}/votes/",
    )
    weight = 2.0
    lifetime = 8.0
    open_at_once = 2

    def __init__(self, run: Any):
        super().__init__(run)
        self.proposals: dict[Any, Proposal] = {}
        self.winding_down = False

    def _now(self) -> float:
        return time.monotonic()

    def _create(self, staff: User) -> None:
        payload = {
            "title": f"chaos proposal {len(self.proposals) + 1}",
            "description": "Opened, voted on, closed and executed under chaos.",
            "voting_starts_at": _iso(-5),
            "voting_ends_at": _iso(self.lifetime),
            "quorum": "1",
        }
        op = staff.api.call(self.name, "create", "POST", "/api/proposals/", json=payload, ok=(200, 201),
                            idempotency_key=True)  # fmt: skip
        if op.outcome != ACKED:
            return
        pk = body_field(op.body, "id")
        if body_field(op.body, "status") != "open":
            opened = staff.api.call(self.name, "open", "POST", f"/api/proposals/{pk}/open/", ok=(200,),
                                    definitive=(409,), data={"proposal": pk})  # fmt: skip
            if opened.outcome != ACKED:
                return
        with self.lock:
            self.proposals[pk] = Proposal(id=pk, close_at=self._now() + self.lifetime + 0.3)

    def staff_step(self, staff: User, rng: random.Random) -> bool:
        now = self._now()
        with self.lock:
            open_count = sum(1 for p in self.proposals.values() if p.close_at > now)
            due = [p for p in self.proposals.values() if p.close_at <= now and staff.name not in p.closers]
        if staff is self.run.staff[0] and open_count < self.open_at_once and not self.winding_down:
            self._create(staff)
            return True
        for proposal in due:
            with self.lock:
                proposal.closers.add(staff.name)
            if self.run.platform is not None and self.run.platform.pause_trigger is not None:
                self.run.platform.pause_trigger.set()
            staff.api.call(self.name, "close", "POST", f"/api/proposals/{proposal.id}/close/", ok=(200,),
                           definitive=(409,), data={"proposal": proposal.id, "staff": staff.name})  # fmt: skip
            staff.api.call(self.name, "execute", "POST", f"/api/proposals/{proposal.id}/execute/", ok=(200, 202),
                           definitive=(409,), data={"proposal": proposal.id, "staff": staff.name})  # fmt: skip
            return True
        return False

    def user_step(self, user: User, rng: random.Random) -> bool:
        if not user.state.get("staked"):
            return False
        now = self._now()
        voted = user.state.setdefault("voted", set())
        with self.lock:
            choices = [p for p in self.proposals.values() if p.close_at - 1.0 > now and p.id not in voted]
        if not choices:
            return False
        proposal = rng.choice(choices)
        voted.add(proposal.id)
        choice = rng.choices(["for", "against", "abstain"], [0.7, 0.2, 0.1])[0]
        copies = 2 if rng.random() < 0.1 else 1  # a double submit: exactly one vote must count
        threads = [threading.Thread(target=self._vote, args=(user, proposal.id, choice)) for _ in range(copies)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        return True

    def _vote(self, user: User, proposal: Any, choice: str) -> None:
        user.api.call(self.name, "vote", "POST", f"/api/proposals/{proposal}/votes/", json={"choice": choice},
                      ok=(201,), definitive=(409,), idempotency_key=True,
                      data={"proposal": proposal, "user": user.name, "choice": choice})  # fmt: skip

    def finish(self) -> None:
        """Close and execute what is still open, so every proposal ends in a checked state."""
        self.winding_down = True
        deadline = self._now() + self.lifetime + 15
        while self._now() < deadline:
            with self.lock:
                pending = [p for p in self.proposals.values() if not p.closers]
            if not pending:
                break
            wait = max(p.close_at for p in pending) - self._now()
            if wait > 0:
                time.sleep(min(wait, 1.0))
                continue
            threads = [threading.Thread(target=self.staff_step, args=(s, random.Random(0))) for s in self.run.staff]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()

    def check(self) -> CheckResult:
        from django.contrib.auth import get_user_model

        result = CheckResult()
        proposal_model = _model("governance", "quorum", "voting_ends_at")
        vote_model = _model("governance", "choice", "weight")
        voter_f = _field(vote_model, "voter", "user")
        users = {u.pk: u.username for u in get_user_model().objects.all()}
        votes = list(
            vote_model.objects.filter(proposal_id__in=list(self.proposals)).values(
                "id", "proposal_id", voter_f, "choice", "weight"
            )
        )
        by_pair: dict[tuple, list] = defaultdict(list)
        for vote in votes:
            by_pair[(str(vote["proposal_id"]), users.get(vote[voter_f]))].append(vote)
        vote_ops = self.ops("vote")
        acked_votes = [op for op in vote_ops if op.outcome == ACKED]
        acked_pairs = Counter((str(op.data["proposal"]), op.data["user"]) for op in acked_votes)
        for op in acked_votes:
            stored = by_pair.get((str(op.data["proposal"]), op.data["user"]), [])
            if not any(str(v["id"]) == str(body_field(op.body, "id")) for v in stored):
                result.lost += 1
                result.violate(f"vote lost: {op.data} id {body_field(op.body, 'id')}")
        for pair, n in acked_pairs.items():
            if (
                n > 1
                and len(
                    {
                        str(body_field(op.body, "id"))
                        for op in acked_votes
                        if (str(op.data["proposal"]), op.data["user"]) == pair
                    }
                )
                > 1
            ):
                result.duplicated += n - 1
                result.violate(f"two votes acknowledged for one voter: {pair}")
        for pair, stored in by_pair.items():
            if len(stored) > 1:
                result.duplicated += len(stored) - 1
                result.violate(f"{len(stored)} votes stored for one voter: {pair}")

        executes = self.ops("execute")
        closes = self.ops("close")
        double_closes = 0
        tally_mismatches = 0
        unexecuted = 0
        for proposal in proposal_model.objects.filter(pk__in=list(self.proposals)):
            pk = str(proposal.pk)
            exec_acks = [op for op in executes if str(op.data["proposal"]) == pk and op.outcome == ACKED]
            close_acks = [op for op in closes if str(op.data["proposal"]) == pk and op.outcome == ACKED]
            if len(exec_acks) > 1:
                result.double_executions += len(exec_acks) - 1
                result.violate(f"proposal {pk} executed by {len(exec_acks)} staff clients")
            if len(close_acks) > 1:
                double_closes += 1
                result.violate(f"proposal {pk} closed (tallied) by {len(close_acks)} staff clients")
            if exec_acks and proposal.status != "executed":
                unexecuted += 1
                result.violate(f"proposal {pk}: execution acknowledged but status is {proposal.status}")
            if proposal.status in ("closed", "executed"):
                mine = [v for v in votes if str(v["proposal_id"]) == pk]
                expected = {
                    c: sum((v["weight"] for v in mine if v["choice"] == c), Decimal(0))
                    for c in ("for", "against", "abstain")
                }
                tally = _tally(proposal)
                if tally is not None and any(Decimal(str(tally.get(c, 0))) != expected[c] for c in expected):
                    tally_mismatches += 1
                    result.violate(f"proposal {pk}: tally {tally} but its votes sum to {expected}")
        result.acknowledged = len(acked_votes) + sum(1 for op in self.ops("create") if op.outcome == ACKED)
        result.details = {
            "proposals": len(self.proposals),
            "votes_acked": len(acked_votes),
            "votes_refused": sum(1 for op in vote_ops if op.outcome == REJECTED),
            "closes_acked": sum(1 for op in closes if op.outcome == ACKED),
            "executes_acked": sum(1 for op in executes if op.outcome == ACKED),
            "executes_refused": sum(1 for op in executes if op.outcome == REJECTED),
            "double_closes": double_closes,
            "lock_refusals": dict(
                Counter(
                    body_field(op.body, "error")
                    for op in closes + executes
                    if body_field(op.body, "error") in ("stale_fence", "proposal_busy")
                )
            ),
            "tally_mismatches": tally_mismatches,
            "executions_missing": unexecuted,
        }
        return result


def _tally(proposal: Any) -> dict[str, Any] | None:
    """The stored tally, whether a JSON field or one column per choice."""
    tally = getattr(proposal, "tally", None)
    if isinstance(tally, dict):
        return tally
    columns = {}
    for choice in ("for", "against", "abstain"):
        for name in (f"tally_{choice}", f"{choice}_weight", f"weight_{choice}", f"votes_{choice}"):
            if hasattr(proposal, name):
                columns[choice] = getattr(proposal, name)
    return columns or None

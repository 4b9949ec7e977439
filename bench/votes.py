"""Benchmark: POST /api/proposals/{id}/votes/ under load (wrk) against the same vote written the
conventional way and a bare Django view that does one INSERT, served by the same gunicorn in the
same run, interleaved. Prints JSON.

    apt-get install -y wrk     # once
    .venv/bin/python bench/votes.py [--seconds 5] [--rounds 3] [--connections 8]

Each vote is a browser-like request: session cookie (read from Redis, its expiry slid), CSRF
header, a fresh Idempotency-Key (row written in the vote's transaction), the proposal row locked
FOR KEY SHARE, the voter's stake summed, the vote and its outbox row inserted. Every request
votes for a new (voter, proposal) pair, so each one is a real 201. The baseline is the same
server and middleware, a csrf-exempt view doing one INSERT.

The goal is our vote at 1.2x or more the rate of the conventional one (bench/conventional.py):
the same request (session cookie, CSRF header, Idempotency-Key, JSON body), the same checks
and the same 201 and rows, written as a Django team would write it: Django's stock cache
session engine, `transaction.atomic()`, `select_for_update()` on the proposal, the stake summed
with `aggregate(Sum(...))`, `Vote.objects.create`, `record_event`, the key looked up first and
its row written with the ORM. SESSION_ENGINE is one per settings, so that view loads the stock
store itself (the middleware then saves it as Django's does): both votes run in the same
gunicorn, workers and pools, interleaved round by round, so their ratio is measured under the
same load; everything else (middleware, user lookup) they share. Two runs in between say where the
difference goes: the same INSERT behind the session, user and CSRF check every browser call
pays, and the vote without an Idempotency-Key. For each kind it also prints the CPU one request
costs in gunicorn, PostgreSQL, Redis and wrk (bench/cpu.py): all four share the machine's cores,
so that total is what sets the rate.

Uses its own database (--database, default `omk_bench`, created and migrated) and Redis db
(--redis-db, default 14); it drops nothing but its own rows.
"""

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=5, help="duration of each wrk run")
    parser.add_argument("--rounds", type=int, default=3, help="interleaved rounds (vote, insert) ")
    parser.add_argument("--connections", type=int, default=8)
    parser.add_argument("--threads", type=int, default=2, help="wrk threads")
    parser.add_argument("--workers", type=int, default=2, help="gunicorn worker processes")
    parser.add_argument("--voters", type=int, default=100)
    parser.add_argument("--proposals", type=int, default=1000)
    parser.add_argument("--database", default="omk_bench")
    parser.add_argument("--redis-db", type=int, default=14)
    return parser.parse_args()


VOTE_LUA = """
local voters = {VOTERS}
local nvoters = #voters
local proposals = {PROPOSALS}
local counter = 0
local thread_id = 0
local threads = {}
function setup(thread)
  thread:set("tid", #threads)
  table.insert(threads, thread)
end
function init(args)
  thread_id = tonumber(tid)
end
request = function()
  -- Each thread walks its own block of (voter, proposal) pairs: never one used before.
  local g = {OFFSET} + thread_id * {BLOCK} + counter
  counter = counter + 1
  local v = voters[(g % nvoters) + 1]
  local p = proposals[math.floor(g / nvoters) % #proposals + 1]
  local headers = {}
  headers["Cookie"] = "sessionid=" .. v[1] .. "; csrftoken=" .. v[2]
  headers["X-CSRFToken"] = v[2]
  headers["Content-Type"] = "application/json"
  {KEY_HEADER}
  return wrk.format("POST", "{PREFIX}" .. p .. "/votes/", headers, '{"choice": "for"}')
end
"""

# Our vote's rate over the conventional one's, at least.
GOAL = 1.2

SESSION_INSERT_LUA = """
local voters = {VOTERS}
local counter = 0
request = function()
  counter = counter + 1
  local v = voters[(counter % #voters) + 1]
  local headers = {}
  headers["Cookie"] = "sessionid=" .. v[1] .. "; csrftoken=" .. v[2]
  headers["X-CSRFToken"] = v[2]
  headers["Content-Type"] = "application/json"
  return wrk.format("POST", "/bench/session-insert", headers, '{"choice": "for"}')
end
"""

INSERT_LUA = """
request = function()
  return wrk.format("POST", "/bench/insert", {["Content-Type"] = "application/json"}, '{"choice": "for"}')
end
"""


def run_wrk(url: str, script: str, *, seconds: int, connections: int, threads: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as handle:
        handle.write(script)
    try:
        output = subprocess.run(
            ["wrk", f"-t{threads}", f"-c{connections}", f"-d{seconds}s", "--latency", "-s", handle.name, url],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        os.unlink(handle.name)
    rate = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))
    total = int(re.search(r"(\d+) requests in", output).group(1))
    non_2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", output)
    errors = re.search(r"Socket errors: (.*)", output)
    p99 = re.search(r"\s99%\s+([\d.]+\w+)", output)
    return {
        "rate": rate,
        "requests": total,
        "non_2xx": int(non_2xx.group(1)) if non_2xx else 0,
        "socket_errors": errors.group(1) if errors else None,
        "p99": p99.group(1) if p99 else None,
    }


def main() -> int:
    args = parse_args()
    load_before = round(os.getloadavg()[0], 2)
    if shutil.which("wrk") is None:
        print(json.dumps({"error": "wrk is not installed: apt-get install -y wrk"}))
        return 2
    database_url = f"postgres://postgres@127.0.0.1:5432/{args.database}"
    redis_url = f"redis://127.0.0.1:6379/{args.redis_db}"
    env = {
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "LOG_LEVEL": "WARNING",
        "DEBUG": "false",
    }
    os.environ.update(env)
    python = sys.executable
    # Their output goes to stderr: stdout is the JSON report alone.
    for command in (["scripts/ensure_database.py"], ["manage.py", "migrate", "--no-input", "-v0"]):
        subprocess.run([python, *command], cwd=ROOT, check=True, env={**os.environ}, stdout=sys.stderr)

    import django

    django.setup()
    voters, proposals = prepare(args)

    from bench.cpu import CpuMeter, per_request_ms
    from tests.support.instances import GunicornInstance

    run_dir = Path(tempfile.mkdtemp(prefix="omk-bench-"))
    instance = GunicornInstance(
        {**env, "WEB_CONCURRENCY": str(args.workers), "GUNICORN_THREADS": "4", "OMK_RUN_DIR": str(run_dir)},
        log_path=run_dir / "gunicorn.log",
    )
    instance.start(wait_for="/health")
    meter = CpuMeter(
        trees={"gunicorn": instance.pid},
        names={"postgres": "postgres", "redis": "redis-server"},
        finished_children="wrk",
    )
    try:
        # Warm both paths (connection pools, imports) before measuring.
        run_wrk(instance.url, INSERT_LUA, seconds=1, connections=args.connections, threads=args.threads)
        lua_voters = "{" + ",".join(f'{{"{s}","{c}"}}' for s, c in voters) + "}"
        lua_proposals = "{" + ",".join(str(p) for p in proposals) + "}"
        run_id = str(int(time.time()))
        offset = 0  # every vote run takes (voter, proposal) pairs no earlier run has used
        vote_kinds = ("vote", "vote_without_key", "conventional_vote")
        block = len(voters) * len(proposals) // (len(vote_kinds) * args.rounds * args.threads)

        def vote_script(key_header: str, prefix: str = "/api/proposals/") -> str:
            return (
                VOTE_LUA.replace("{VOTERS}", lua_voters)
                .replace("{PREFIX}", prefix)
                .replace("{PROPOSALS}", lua_proposals)
                .replace("{BLOCK}", str(block))
                .replace("{OFFSET}", str(offset))
                .replace("{KEY_HEADER}", key_header)
            )

        key_header = f'headers["Idempotency-Key"] = "bench-{run_id}-" .. g'
        scripts = {
            "vote": lambda: vote_script(key_header),
            "conventional_vote": lambda: vote_script(key_header, "/bench/conventional/proposals/"),
            "vote_without_key": lambda: vote_script(""),
            "session_insert": lambda: SESSION_INSERT_LUA.replace("{VOTERS}", lua_voters),
            "bare_insert": lambda: INSERT_LUA,
        }
        runs: dict[str, list[dict]] = {kind: [] for kind in scripts}
        for round_ in range(args.rounds):
            # Alternate the order, so a drift in the machine's speed hits every kind alike.
            for kind in list(scripts) if round_ % 2 == 0 else list(scripts)[::-1]:
                script = scripts[kind]()
                before = meter.snapshot()
                result = run_wrk(
                    instance.url, script, seconds=args.seconds, connections=args.connections, threads=args.threads
                )
                result["cpu_ms_per_request"] = per_request_ms(before, meter.snapshot(), result["requests"])
                if kind in vote_kinds:
                    offset += block * args.threads
                runs[kind].append(result)
    finally:
        instance.stop()
    capacity = len(voters) * len(proposals)
    rates = {kind: statistics.median(r["rate"] for r in results) for kind, results in runs.items()}
    bare = rates["bare_insert"]
    vote_vs_conventional = round(rates["vote"] / rates["conventional_vote"], 3)
    report = {
        "benchmark": "vote cast vs the conventional vote and a bare one-insert view, same gunicorn, "
        "interleaved rounds (medians)",
        "vote_rate_per_s": rates["vote"],
        "conventional_vote_rate_per_s": rates["conventional_vote"],
        "bare_insert_rate_per_s": bare,
        "goal": {"vote_vs_conventional": GOAL, "measured": vote_vs_conventional, "met": vote_vs_conventional >= GOAL},
        "ratios": {
            "vote_vs_conventional": vote_vs_conventional,
            "vote_vs_bare_insert (reference)": round(rates["vote"] / bare, 3),
            # How much the machine's noise moves it: each round's own ratio.
            "vote_vs_conventional_per_round": [
                round(ours["rate"] / theirs["rate"], 3)
                for ours, theirs in zip(runs["vote"], runs["conventional_vote"], strict=True)
            ],
        },
        # Where the gap lies: each row adds a layer to the one below it.
        "breakdown_ratio_to_bare_insert": {
            "session_insert (+ session read, user load, CSRF check)": round(rates["session_insert"] / bare, 3),
            "vote_without_key (+ API schema, vote statement with outbox row)": round(
                rates["vote_without_key"] / bare, 3
            ),
            "vote (+ Idempotency-Key: transaction, key row with the response)": round(rates["vote"] / bare, 3),
            "conventional_vote (stock sessions, key looked up, atomic, FOR UPDATE, ORM, record_event)": round(
                rates["conventional_vote"] / bare, 3
            ),
        },
        "rates_per_s": rates,
        # Where each kind's time goes (medians over the rounds): with every process on the same
        # cores, rate ~= cores * 1000 / total, so the ratio is about bare total / vote total.
        "cpu_ms_per_request": {
            kind: {
                label: statistics.median(r["cpu_ms_per_request"][label] for r in results)
                for label in results[0]["cpu_ms_per_request"]
            }
            for kind, results in runs.items()
        },
        "runs": runs,
        "votes_non_2xx": sum(r["non_2xx"] for kind in vote_kinds for r in runs[kind]),
        "session_insert_non_2xx": sum(r["non_2xx"] for r in runs["session_insert"]),
        "vote_pairs_available": capacity,
        # A wrk thread sending more votes than this in one run would reuse pairs (-> 409s above).
        "vote_pairs_per_thread_and_run": block,
        "config": {
            "seconds": args.seconds,
            "rounds": args.rounds,
            "connections": args.connections,
            "wrk_threads": args.threads,
            "gunicorn_workers": args.workers,
            "gunicorn_threads": 4,
            "cpus": os.cpu_count(),
            # Other work on the machine shares its cores: the 1-minute load average before and after.
            "load_average": [load_before, round(os.getloadavg()[0], 2)],
        },
    }
    print(json.dumps(report, indent=2))
    return 0


def prepare(args: argparse.Namespace) -> tuple[list[tuple[str, str]], list[int]]:
    """Voters with a stake and a logged-in session each, open proposals, the baseline table."""
    from datetime import timedelta
    from decimal import Decimal

    from django.contrib.auth import get_user_model
    from django.db import connection
    from django.test import Client
    from django.utils import timezone
    from django.utils.crypto import get_random_string

    from governance.models import Proposal, StakingPosition
    from lifecycle.idempotency.models import IdempotencyRecord

    with connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE IF NOT EXISTS bench_insert (id bigserial PRIMARY KEY, payload bytea, created_at timestamptz)"
        )
        cursor.execute("TRUNCATE bench_insert")
    User = get_user_model()
    staff, _ = User.objects.get_or_create(username="bench-staff", defaults={"is_staff": True})
    now = timezone.now()
    Proposal.objects.filter(proposer=staff).delete()  # and, cascading, the votes of earlier runs
    IdempotencyRecord.objects.filter(user__username__startswith="bench-voter-").delete()
    proposals = Proposal.objects.bulk_create(
        Proposal(
            proposer=staff,
            title=f"bench {i}",
            status=Proposal.Status.OPEN,
            voting_starts_at=now - timedelta(hours=1),
            voting_ends_at=now + timedelta(days=1),
            quorum=Decimal(1),
        )
        for i in range(args.proposals)
    )
    voters = []
    for i in range(args.voters):
        user, created = User.objects.get_or_create(username=f"bench-voter-{i}")
        if created or not StakingPosition.objects.filter(owner=user).exists():
            StakingPosition.objects.create(
                owner=user, amount=Decimal(10), lock_days=30, started_at=now, unlocks_at=now + timedelta(days=30)
            )
        client = Client()
        client.force_login(user)  # a real session in Redis, as a browser login leaves it
        voters.append((client.cookies["sessionid"].value, get_random_string(32)))
    return voters, [p.pk for p in proposals]


if __name__ == "__main__":
    sys.exit(main())

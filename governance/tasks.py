"""Procrastinate tasks of governance (autodiscovered, like every installed app's `tasks` module)."""

from django.db import close_old_connections
from procrastinate.contrib.django import app

from governance.services import purchase_expire_pending


# Every 30 s (croniter's sixth field is seconds): a reservation outlives its time by at most that
# (purchase_create also expires a sale's due reservations itself before it counts what is left).
# The queueing lock keeps at most one pass waiting however many workers defer it; passes that
# overlap are safe (conditional UPDATEs under the sale's row lock).
@app.periodic(cron="* * * * * */30", periodic_id="governance-expire-purchases")
@app.task(name="governance.expire_purchases", queueing_lock="governance-expire-purchases", pass_context=False)
def expire_purchases_pass(timestamp: int) -> int:
    try:
        return purchase_expire_pending()
    finally:
        # Sync tasks run in worker threads, outside any request: give the connection back.
        close_old_connections()

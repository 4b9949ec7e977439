"""Procrastinate tasks of the idempotency app (autodiscovered, like every app's `tasks` module)."""

from datetime import timedelta

from django.db import close_old_connections
from procrastinate.contrib.django import app

from lifecycle.idempotency.conf import idempotency_settings
from lifecycle.idempotency.services import idempotency_purge


# Clients retry a request within minutes; a day of keys covers any retry while keeping the
# table small.
@app.periodic(cron="17 * * * *", periodic_id="lifecycle-idempotency-purge")
@app.task(name="lifecycle.idempotency_purge", queueing_lock="lifecycle-idempotency-purge", pass_context=False)
def idempotency_purge_pass(timestamp: int) -> int:
    try:
        return idempotency_purge(older_than=timedelta(seconds=idempotency_settings.RETENTION_SECONDS))
    finally:
        close_old_connections()

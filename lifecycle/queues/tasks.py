"""Procrastinate tasks of the queues app (autodiscovered, like every installed app's `tasks` module)."""

from procrastinate.contrib.django import app

from lifecycle.queues.services import queue_remove_idle_consumers


# Every minute some worker drops consumers that went idle holding nothing (a consumer group
# otherwise keeps every consumer name that ever claimed). Passes may overlap safely: each
# deletion re-checks the consumer in one script.
@app.periodic(cron="* * * * *", periodic_id="queues-remove-idle-consumers")
@app.task(name="queues.remove_idle_consumers", queueing_lock="queues-remove-idle-consumers", pass_context=False)
def remove_idle_consumers_pass(timestamp: int) -> int:
    return queue_remove_idle_consumers()

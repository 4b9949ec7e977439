"""The queues' part of shutdown and recovery (LIFECYCLE_SHUTDOWN_STEPS, LIFECYCLE_RECOVERY_STEPS)."""

from lifecycle.steps import Step


class HandBackMessages(Step):
    """Stream messages this instance claimed and did not ack are released for re-delivery."""

    name = "hand_back_messages"
    label = "Handing back unacked messages ({count})"
    flushes = "message"

    def run(self, *, deadline: float) -> int:
        from lifecycle.queues.services import queue_release_claimed

        return queue_release_claimed(deadline=deadline)


class RedeliverMessages(Step):
    """Messages claimed by a consumer that went silent go back to the queue for another."""

    name = "redeliver_messages"
    label = "Re-delivering claimed messages ({count})"

    def run(self, *, deadline: float) -> int:
        from lifecycle.queues.services import queue_reclaim_stale

        return queue_reclaim_stale(deadline=deadline)

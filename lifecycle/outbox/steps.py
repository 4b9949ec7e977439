"""The outbox's part of a shutdown (LIFECYCLE_SHUTDOWN_STEPS)."""

import time

from lifecycle.steps import Step


class ExportOutbox(Step):
    name = "export_outbox"
    label = "Exporting outbox ({count} events)"
    flushes = "outbox_event"

    def run(self, *, deadline: float) -> int:
        from lifecycle.outbox.exporter import outbox_export

        # What is not exported now stays in PostgreSQL for the next instance: nothing is lost.
        return outbox_export(max_seconds=max(0.0, deadline - time.monotonic()))

import signal
import threading

from django.core.management.base import BaseCommand

from lifecycle.outbox.conf import outbox_settings
from lifecycle.outbox.exporter import outbox_export, outbox_export_loop
from lifecycle.outbox.services import outbox_prune


class Command(BaseCommand):
    help = "Export pending outbox events to the sink (BigQuery): once, or continuously with --loop."

    def add_arguments(self, parser):
        parser.add_argument("--loop", action="store_true", help="Run until SIGTERM/SIGINT.")
        parser.add_argument("--max-seconds", type=float, default=60.0, help="Time budget of a single run.")
        parser.add_argument("--batch-size", type=int, default=outbox_settings.BATCH_SIZE)
        parser.add_argument("--prune", action="store_true", help="Also delete rows exported before the retention.")

    def handle(self, *args, loop: bool, max_seconds: float, batch_size: int, prune: bool, **options):
        if loop:
            stop = threading.Event()
            for signum in (signal.SIGTERM, signal.SIGINT):
                signal.signal(signum, lambda *_: stop.set())
            outbox_export_loop(stop=stop, batch_size=batch_size)
            return
        exported = outbox_export(max_seconds=max_seconds, batch_size=batch_size)
        self.stdout.write(f"exported {exported} events")
        if prune:
            self.stdout.write(f"pruned {outbox_prune()} exported events")

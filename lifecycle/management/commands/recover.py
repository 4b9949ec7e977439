from django.core.management.base import BaseCommand

from lifecycle.recovery import recovery_run
from lifecycle.steps import format_report


class Command(BaseCommand):
    help = "Run a recovery pass now: mark lost instances, retry stalled jobs, re-deliver messages, count sessions."

    def add_arguments(self, parser):
        parser.add_argument("--instance", help="store the report under this registered instance id")
        parser.add_argument("--budget", type=float, default=30.0, help="seconds the pass may take")

    def handle(self, *args, instance: str | None, budget: float, **options) -> None:
        report = recovery_run(instance_id=instance, kind="manual", record=bool(instance), budget=budget)
        for line in format_report(report):
            self.stdout.write(line)
        if not report.ok:
            raise SystemExit(1)

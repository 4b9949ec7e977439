import datetime as dt

from django.core.management.base import BaseCommand
from django.utils import timezone

from lifecycle.selectors import instances_list


class Command(BaseCommand):
    help = "List live instances and those gone recently (registry in PostgreSQL, heartbeats in Redis)."

    def add_arguments(self, parser):
        parser.add_argument("--hours", type=float, default=24.0, help="show instances gone within this many hours")

    def handle(self, *args, hours: float, **options) -> None:
        rows = instances_list(since=dt.timedelta(hours=hours))
        header = ("ID", "KIND", "STATE", "HOST", "PID", "PLATFORM", "VERSION", "STARTED", "CHANGED", "HEARTBEAT")
        now = timezone.now()
        table = [header]
        for row in rows:
            i = row.instance
            table.append(
                (
                    i.id,
                    i.kind,
                    i.state,
                    i.host,
                    str(i.pid),
                    i.platform,
                    i.version,
                    i.started_at.strftime("%Y-%m-%d %H:%M:%S"),
                    f"{(now - i.state_changed_at).total_seconds():.0f} s ago",
                    f"{row.heartbeat_ttl:.1f} s left" if row.heartbeat_ttl is not None else "-",
                )
            )
        widths = [max(len(r[c]) for r in table) for c in range(len(header))]
        for r in table:
            self.stdout.write("  ".join(cell.ljust(w) for cell, w in zip(r, widths, strict=True)).rstrip())
        if not rows:
            self.stdout.write("(no instances)")

import json
import os
import signal
import time

from django.core.management.base import BaseCommand, CommandError

from lifecycle.local_instances import LocalInstance, local_instances, process_alive
from lifecycle.platform import detect_platform
from lifecycle.steps import Report, format_report


class Command(BaseCommand):
    help = (
        "Stop the instance running on this host (SIGTERM), follow its shutdown and print the report. "
        "Exits 1 if a step failed or the budget was exceeded, 2 if there is nothing to stop."
    )

    def add_arguments(self, parser):
        parser.add_argument("--all", action="store_true", help="stop every instance on this host")
        parser.add_argument("--pid", type=int, help="stop the instance with this pid")
        parser.add_argument("--timeout", type=float, help="seconds to follow (default: budget + 5)")

    def handle(self, *args, all: bool, pid: int | None, timeout: float | None, **options) -> None:
        instances = local_instances()
        if pid is not None:
            instances = [i for i in instances if i.pid == pid]
        if not instances:
            self.stderr.write("No running instance found on this host.")
            raise SystemExit(2)
        if len(instances) > 1 and not all:
            listing = ", ".join(f"{i.kind} pid {i.pid}" for i in instances)
            raise CommandError(f"{len(instances)} instances run here ({listing}): pass --pid or --all.")
        timeout = timeout if timeout is not None else detect_platform().shutdown_budget + 5
        for instance in instances:
            instance.report_path.unlink(missing_ok=True)
            os.kill(instance.pid, signal.SIGTERM)
        ok = True
        for instance in instances:
            ok = self.follow(instance, timeout) and ok
        if not ok:
            raise SystemExit(1)

    def follow(self, instance: LocalInstance, timeout: float) -> bool:
        self.stdout.write(f"Stopping {instance.kind} instance {instance.instance_id} (pid {instance.pid})")
        printed = 0
        report = None
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            data = self.read(instance)
            if data is not None:
                report = Report.from_dict(data)
                lines = format_report(report)[:-1]
                for line in lines[printed:]:
                    self.stdout.write(line)
                printed = len(lines)
                if data.get("done") and not process_alive(instance.pid):
                    break
            elif not process_alive(instance.pid):
                break
            time.sleep(0.05)
        if report is None:
            self.stdout.write("The instance left no shutdown report (was it killed?).")
            return False
        if process_alive(instance.pid):
            self.stdout.write(f"Still running after {timeout:g} s.")
            return False
        self.stdout.write(format_report(report)[-1])
        return report.ok

    def read(self, instance: LocalInstance) -> dict | None:
        try:
            return json.loads(instance.report_path.read_text())
        except (OSError, ValueError):
            return None

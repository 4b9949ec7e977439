import json
import os
import signal
import time

from django.core.management.base import BaseCommand

from lifecycle.local_instances import (
    BQEMULATOR_RECORD,
    LocalInstance,
    local_bqemulator,
    local_instances,
    process_alive,
)
from lifecycle.platform import detect_platform
from lifecycle.shutdown import run_dir
from lifecycle.steps import Report, format_steps, format_summary


class Command(BaseCommand):
    help = (
        "Stop the instances of this service running on this host (SIGTERM; all of them, web and "
        "worker, unless --pid picks one), follow each shutdown and print its report; then the "
        "local BigQuery emulator `make run` started, if it recorded one. Exits 0 if every instance "
        "stopped cleanly inside its budget, 1 if a step failed or a budget was exceeded, 2 if "
        "there is nothing to stop."
    )
    # Its start is time the instances' requests and budgets run on: the project's checks (which
    # import every URLconf and API schema) are for deploys and `manage.py check`.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser):
        parser.add_argument("--pid", type=int, help="stop only the instance with this pid")
        # The default since every instance is stopped without arguments; kept for scripts.
        parser.add_argument("--all", action="store_true", help="stop every instance on this host (the default)")
        parser.add_argument("--timeout", type=float, help="seconds to follow each (default: budget + 5)")

    def handle(self, *args, pid: int | None, timeout: float | None, **options) -> None:
        instances = local_instances()
        emulator = None
        if pid is not None:
            instances = [i for i in instances if i.pid == pid]
        else:
            emulator = local_bqemulator()
        if not instances and emulator is None:
            self.stderr.write("No running instance found on this host.")
            raise SystemExit(2)
        timeout = timeout if timeout is not None else detect_platform().shutdown_budget + 5
        # All at once: they stop in parallel, each inside its own budget.
        for instance in instances:
            if self.stopping(instance):
                # Already stopping (a Ctrl-C, another `manage.py stop`): follow, do not signal again.
                continue
            instance.report_path.unlink(missing_ok=True)
            os.kill(instance.pid, signal.SIGTERM)
        ok = True
        for index, instance in enumerate(instances):
            if index:
                self.stdout.write("")
            ok = self.follow(instance, timeout) and ok
        if emulator is not None:
            ok = self.stop_emulator(emulator) and ok
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
                lines = format_steps(report)
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
        for line in format_summary(report):
            self.stdout.write(line)
        return report.ok

    def stop_emulator(self, pid: int, timeout: float = 10.0) -> bool:
        """The local BigQuery holds nothing of ours in memory (its data is on disk): SIGTERM."""
        self.stdout.write(f"Stopping the local BigQuery emulator (pid {pid})")
        try:
            os.kill(pid, signal.SIGTERM)
        except ProcessLookupError:
            return True
        deadline = time.monotonic() + timeout
        while process_alive(pid) and time.monotonic() < deadline:
            time.sleep(0.05)
        if process_alive(pid):
            self.stdout.write(f"Still running after {timeout:g} s.")
            return False
        (run_dir() / BQEMULATOR_RECORD).unlink(missing_ok=True)
        self.stdout.write("Stopped.")
        return True

    def stopping(self, instance: LocalInstance) -> bool:
        """A report file of this very instance (not of a recycled pid's), not yet done."""
        data = self.read(instance)
        return data is not None and data.get("instance_id") == instance.instance_id and not data.get("done")

    def read(self, instance: LocalInstance) -> dict | None:
        try:
            return json.loads(instance.report_path.read_text())
        except (OSError, ValueError):
            return None

import time

from django.core.management.base import BaseCommand

from lifecycle.conf import lifecycle_settings
from lifecycle.drain import mark_draining
from lifecycle.local_instances import local_instances
from lifecycle.models import InstanceState
from lifecycle.platform import default_drain_delay, detect_platform
from lifecycle.services import instance_set_state


class Command(BaseCommand):
    help = (
        "Drain the web instances on this host: readiness answers 503 at once, then wait the drain "
        "delay while load balancers take them out (a Kubernetes preStop hook)."
    )

    def add_arguments(self, parser):
        parser.add_argument("--pid", type=int, help="only the instance with this master pid")
        parser.add_argument("--no-wait", action="store_true", help="do not wait the drain delay")

    def handle(self, *args, pid: int | None, no_wait: bool, **options) -> None:
        instances = [i for i in local_instances() if i.kind == "web" and (pid is None or i.pid == pid)]
        if not instances:
            self.stderr.write("No running web instance found on this host.")
            raise SystemExit(2)
        for instance in instances:
            mark_draining(instance.drain_flag)
            try:
                instance_set_state(
                    instance_id=instance.instance_id, state=InstanceState.DRAINING, detail="preStop drain"
                )
            except Exception as exc:
                # Draining must not depend on PostgreSQL: the flag file is what readiness reads.
                self.stderr.write(f"Could not record the draining state: {exc!r}")
            self.stdout.write(f"Draining {instance.instance_id} (pid {instance.pid}): readiness 503")
        delay = lifecycle_settings.DRAIN_DELAY
        delay = default_drain_delay(detect_platform()) if delay is None else delay
        if not no_wait and delay > 0:
            self.stdout.write(f"Waiting {delay:g} s for load balancers")
            time.sleep(delay)

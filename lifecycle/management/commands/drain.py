import time

from django.core.management.base import BaseCommand

from lifecycle.conf import lifecycle_settings
from lifecycle.drain import drain_arguments, drain_started_at, mark_draining, states_recorded
from lifecycle.local_instances import local_instances
from lifecycle.models import InstanceState
from lifecycle.platform import default_drain_delay, detect_platform
from lifecycle.services import instance_set_state


class Command(BaseCommand):
    help = (
        "Drain the web instances on this host: readiness answers 503 at once, then wait the drain "
        "delay while load balancers take them out (a Kubernetes preStop hook)."
    )
    # A preStop hook's time is the pod's shutdown budget: the project's checks (which import
    # every URLconf and API schema, more than half a second) are for deploys and `manage.py check`.
    requires_system_checks: list[str] = []

    def add_arguments(self, parser):
        drain_arguments(parser)

    def handle(self, *args, pid: int | None, no_wait: bool, **options) -> None:
        instances = [i for i in local_instances() if i.kind == "web" and (pid is None or i.pid == pid)]
        if not instances:
            self.stderr.write("No running web instance found on this host.")
            raise SystemExit(2)
        for instance in instances:
            # Marked already by manage.py before Django's setup (lifecycle.drain.drain_before_setup),
            # unless the instance started since: then now.
            mark_draining(instance.drain_flag)
            try:
                instance_set_state(
                    instance_id=instance.instance_id, state=InstanceState.DRAINING, detail="preStop drain"
                )
            except Exception as exc:
                # Draining must not depend on PostgreSQL: the flag file is what readiness reads.
                self.stderr.write(f"Could not record the draining state: {exc!r}")
            self.stdout.write(f"Draining {instance.instance_id} (pid {instance.pid}): readiness 503")
        states_recorded.set()
        delay = lifecycle_settings.DRAIN_DELAY
        delay = default_drain_delay(detect_platform()) if delay is None else delay
        if not no_wait and delay > 0:
            # Counted from the flags: the load balancers saw 503 from then on, while Django was
            # set up and the state recorded. Every instance gets the whole delay, the last one
            # marked included.
            marked = [drain_started_at(i.drain_flag) or time.time() for i in instances]
            self.stdout.write(f"Waiting {delay:g} s for load balancers")
            time.sleep(max(0.0, max(marked) + delay - time.time()))

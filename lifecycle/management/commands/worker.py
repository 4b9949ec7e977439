from django.core.management.base import BaseCommand

from lifecycle.worker import worker_run


class Command(BaseCommand):
    help = "Run a durable-job worker (procrastinate) with the instance lifecycle: registry, recovery, graceful stop."

    def add_arguments(self, parser):
        parser.add_argument("queues", nargs="*", help="queues to work (default: all)")
        parser.add_argument(
            "--concurrency", type=int, default=2, help="jobs run at once (the periodic recovery pass needs a slot too)"
        )
        parser.add_argument(
            "--until-empty",
            action="store_true",
            help="drain: run jobs, the outbox export and the periodic passes until nothing is left, then stop"
            " (the worker that scales to zero: a wake-up or the scheduled Cloud Run job)",
        )

    def handle(self, *args, queues: list[str], concurrency: int, until_empty: bool, **options) -> None:
        code = worker_run(queues=queues or None, concurrency=concurrency, until_empty=until_empty)
        if code:
            raise SystemExit(code)

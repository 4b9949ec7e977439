import datetime as dt

from django.core.management.base import BaseCommand, CommandError
from django.utils.module_loading import import_string

from lifecycle.outbox.conf import outbox_settings
from lifecycle.outbox.models import KIND_TABLES
from lifecycle.outbox.reconcile import outbox_reexport_missing, outbox_wait_for_staged, rebuild_margin
from lifecycle.outbox.sinks import SinkError


class Command(BaseCommand):
    help = (
        "Create (or update) the BigQuery dataset and the per-kind event tables, and bring existing "
        "tables to the layout (day partitions on created_at, clustered on event_id) without losing "
        "a row. Idempotent."
    )

    def add_arguments(self, parser):
        parser.add_argument(
            "--reexport-since",
            type=dt.datetime.fromisoformat,
            help="Also export again the events marked exported since this ISO time that BigQuery lacks.",
        )

    def handle(self, *args, reexport_since: dt.datetime | None = None, **options):
        sink = import_string(outbox_settings.SINK)()
        try:
            for line in sink.setup():
                self.stdout.write(line)
            if reexport_since is not None:
                since = reexport_since if reexport_since.tzinfo else reexport_since.replace(tzinfo=dt.UTC)
                for table in KIND_TABLES.values():
                    requeued = outbox_reexport_missing(sink=sink, table=table, since=since)
                    self.stdout.write(f"table {table}: {requeued} event(s) missing from BigQuery queued again")
            # A table rebuilt while exporters ran may lack what they wrote into the former one
            # after its backup copy: those events are exported again (see lifecycle.outbox.reconcile).
            for table, started in getattr(sink, "rebuilt", {}).items():
                left = outbox_wait_for_staged(
                    table=table,
                    before=started,
                    timeout=outbox_settings.RECOVER_AFTER_SECONDS + outbox_settings.BIGQUERY_TIMEOUT_SECONDS,
                )
                if left:
                    self.stderr.write(
                        f"table {table}: {left} event(s) staged before the rebuild are not settled yet; "
                        "run bigquery_setup --reexport-since later if they are missing"
                    )
                requeued = outbox_reexport_missing(sink=sink, table=table, since=rebuild_margin(started))
                self.stdout.write(f"table {table}: {requeued} event(s) exported during the rebuild queued again")
        except SinkError as exc:
            raise CommandError(str(exc)) from exc
        except Exception as exc:
            if type(exc).__module__.split(".")[0] in ("google", "requests", "urllib3"):
                raise CommandError(f"BigQuery is not reachable or refused: {exc}") from exc
            raise
        finally:
            sink.close()

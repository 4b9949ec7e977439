from django.core.management.base import BaseCommand, CommandError
from django.utils.module_loading import import_string

from lifecycle.outbox.conf import outbox_settings
from lifecycle.outbox.sinks import SinkError


class Command(BaseCommand):
    help = "Create (or update) the BigQuery dataset and the per-kind event tables. Idempotent."

    def handle(self, *args, **options):
        sink = import_string(outbox_settings.SINK)()
        try:
            for line in sink.setup():
                self.stdout.write(line)
        except SinkError as exc:
            raise CommandError(str(exc)) from exc
        except Exception as exc:
            if type(exc).__module__.split(".")[0] in ("google", "requests", "urllib3"):
                raise CommandError(f"BigQuery is not reachable or refused: {exc}") from exc
            raise
        finally:
            sink.close()

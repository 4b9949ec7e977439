"""Log context: the request id and the instance id on every record (JSON in production)."""

from __future__ import annotations

import contextvars
import logging
import os

from gunicorn.glogging import Logger as GunicornBaseLogger

from lifecycle.registry import INSTANCE_ID_ENV

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("request_id", default=None)


class ContextFilter(logging.Filter):
    """Adds `request_id` and `instance_id` to every record, for Cloud Logging to index."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "request_id"):
            record.request_id = request_id_var.get()
        if not hasattr(record, "instance_id"):
            record.instance_id = os.environ.get(INSTANCE_ID_ENV)
        return True


# One log format: the application's JSON lines (settings LOGGING "json") and gunicorn's access and
# error lines (GunicornLogger) come from this one formatter, with the same fields.
JSON_FIELDS = "%(asctime)s %(levelname)s %(name)s %(message)s %(request_id)s %(instance_id)s"


def json_formatter() -> logging.Formatter:
    """The JSON formatter, for dictConfig ("()": "lifecycle.logs.json_formatter") and gunicorn.
    Cloud Logging reads `severity` and `message` from one JSON object per line."""
    from pythonjsonlogger.json import JsonFormatter

    return JsonFormatter(JSON_FIELDS, rename_fields={"levelname": "severity", "asctime": "time"})


def json_logs() -> bool:
    """Whether this process logs JSON: as settings decide it (settings.production forces it,
    else LOG_FORMAT), read from the environment because gunicorn's master sets up its logging
    before Django's settings exist."""
    return os.environ.get("DJANGO_SETTINGS_MODULE") == "settings.production" or (os.environ.get("LOG_FORMAT") == "json")


class GunicornLogger(GunicornBaseLogger):
    """gunicorn's logger (omk/gunicorn.conf.py `logger_class`), writing JSON lines when the
    application does: the access line carries the response's X-Request-ID (the request id the
    application logged under, set by RequestContextMiddleware), the instance id, and Cloud
    Logging's `httpRequest` fields."""

    def setup(self, cfg) -> None:
        super().setup(cfg)
        if not json_logs():
            return
        for log in (self.error_log, self.access_log):
            for handler in log.handlers:
                handler.setFormatter(json_formatter())
                handler.addFilter(ContextFilter())

    def access(self, resp, req, environ, request_time) -> None:
        if not json_logs():
            return super().access(resp, req, environ, request_time)
        if not self.access_log_enabled:
            return None
        atoms = self.atoms(resp, req, environ, request_time)
        seconds = request_time.total_seconds()
        query = f"?{atoms['q']}" if atoms.get("q") else ""
        try:
            self.access_log.info(
                "%s %s %s",
                atoms["m"],
                f"{atoms['U']}{query}",
                atoms["s"],
                extra={
                    "request_id": atoms.get("{x-request-id}o"),
                    "httpRequest": {
                        "requestMethod": atoms["m"],
                        "requestUrl": f"{atoms['U']}{query}",
                        "status": int(atoms["s"]),
                        "responseSize": str(atoms["B"] or 0),
                        "userAgent": atoms["a"],
                        "remoteIp": atoms["h"],
                        "protocol": atoms["H"],
                        "latency": f"{seconds:.6f}s",
                    },
                },
            )
        except Exception:
            self.exception("Could not write the access log line")
        return None

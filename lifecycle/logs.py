"""Log context: the request id and the instance id on every record (JSON in production)."""

from __future__ import annotations

import contextvars
import logging
import os

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

"""Errors that services raise and the API turns into `{"error", "detail", "fields"}` responses.

Every app raises these (never Django's ValidationError or DoesNotExist across its boundary), so
every router answers them the same way (core/handlers.py).
"""

from typing import Any


class ServiceError(Exception):
    """A refusal the client can act on (never a bug): carries the HTTP status and a stable code."""

    status: int = 400
    code: str = "bad_request"
    # Seconds the client should wait before retrying (sent as Retry-After), for refusals that pass.
    retry_after: int | None = None

    def __init__(self, detail: str, *, code: str | None = None, fields: dict[str, Any] | None = None):
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.fields = fields or {}


class InvalidInput(ServiceError):
    status = 422
    code = "validation_error"

    @classmethod
    def of(cls, fields: dict[str, str]) -> "InvalidInput":
        """One refusal naming every field that is wrong, with one message each."""
        summary = "; ".join(f"{name}: {message}" for name, message in fields.items())
        return cls(f"Invalid input. {summary}", fields={name: [message] for name, message in fields.items()})


class NotAuthenticated(ServiceError):
    status = 401
    code = "not_authenticated"


class Forbidden(ServiceError):
    status = 403
    code = "forbidden"


class NotFound(ServiceError):
    status = 404
    code = "not_found"


class UnsupportedMediaType(ServiceError):
    status = 415
    code = "unsupported_media_type"


class Conflict(ServiceError):
    status = 409
    code = "conflict"


class Throttled(ServiceError):
    """Too many requests: a rate or a lockout; Retry-After says when to try again."""

    status = 429
    code = "throttled"

    def __init__(self, detail: str, *, retry_after: int, code: str | None = None):
        super().__init__(detail, code=code)
        self.retry_after = retry_after


class Busy(Conflict):
    """The operation is running elsewhere (another instance holds its lock): retry shortly."""

    code = "busy"
    retry_after = 1


STATUS_CODES: dict[int, str] = {
    400: "bad_request",
    401: "not_authenticated",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "validation_error",
    429: "throttled",
}


def error_body(status: int, detail: str, *, code: str | None = None, fields: dict[str, Any] | None = None) -> dict:
    return {"error": code or STATUS_CODES.get(status, "error"), "detail": detail, "fields": fields or {}}

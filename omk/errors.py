"""Errors that services raise and the API turns into `{"error", "detail", "fields"}` responses.

They live in the project package (not in one app) so that governance, hive and accounts raise
the same types and every router answers them the same way.
"""

from typing import Any


class ServiceError(Exception):
    """A refusal the client can act on (never a bug): carries the HTTP status and a stable code."""

    status: int = 400
    code: str = "bad_request"

    def __init__(self, detail: str, *, code: str | None = None, fields: dict[str, Any] | None = None):
        super().__init__(detail)
        self.detail = detail
        if code is not None:
            self.code = code
        self.fields = fields or {}


class InvalidInput(ServiceError):
    status = 422
    code = "validation_error"


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


# JSON-schema pattern for every free-text input: PostgreSQL text cannot hold NUL, so the schema
# says so (clients and schemathesis see it) and pydantic answers 422 naming the field.
NO_NUL = r"^[^\x00]*$"


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

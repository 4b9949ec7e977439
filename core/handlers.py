"""The JSON form of every error an API operation can end with, for any NinjaAPI.

Every error leaves as `{"error": code, "detail": message, "fields": {field: [messages]}}`: the
services' own errors (core.errors), ninja's validation and authentication errors, and Django's
ValidationError, PermissionDenied, Http404 and DoesNotExist raised by code it calls. Anything
else goes on to Django: a PostgreSQL or Redis outage becomes the middleware's 503 with
Retry-After, a bug handler500's JSON 500.
"""

import logging
from functools import partial

from django.core.exceptions import ObjectDoesNotExist, PermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.db import DataError
from django.http import Http404, HttpRequest, HttpResponse
from ninja import NinjaAPI
from ninja.errors import AuthenticationError, HttpError
from ninja.errors import ValidationError as NinjaValidationError

from core.errors import ServiceError, error_body

logger = logging.getLogger(__name__)

# Parameter sources ninja puts first in an error location; the field name follows them.
_SOURCES = {"body", "query", "path", "header", "cookie", "form", "file"}


def _respond(
    api: NinjaAPI, request: HttpRequest, status: int, detail: str, *, code: str | None = None, fields=None
) -> HttpResponse:
    return api.create_response(request, error_body(status, detail, code=code, fields=fields), status=status)


def _field_name(loc: tuple | list, view_params: set[str]) -> str:
    parts = [str(p) for p in loc]
    if parts and parts[0] in _SOURCES:
        source = parts.pop(0)
        # The view's own parameter name (e.g. `payload`) is not a field the client knows.
        if parts and parts[0] in view_params and len(parts) > 1:
            parts.pop(0)
        if not parts:
            return source
    return ".".join(parts) or "body"


def _validation_error(api: NinjaAPI, request: HttpRequest, exc: NinjaValidationError) -> HttpResponse:
    fields: dict[str, list[str]] = {}
    for error in exc.errors:
        loc = error.get("loc", ())
        name = _field_name(loc, {"payload", "data", "body"})
        if error.get("type") == "missing" and len(loc) <= 2 and loc and loc[0] == "body":
            name = "body"
        fields.setdefault(name, []).append(str(error.get("msg", "Invalid value.")))
    summary = "; ".join(f"{name}: {' '.join(messages)}" for name, messages in fields.items())
    return _respond(api, request, 422, f"Invalid input. {summary}", fields=fields)


def _service_error(api: NinjaAPI, request: HttpRequest, exc: ServiceError) -> HttpResponse:
    response = _respond(api, request, exc.status, exc.detail, code=exc.code, fields=exc.fields)
    if exc.retry_after is not None:
        response["Retry-After"] = str(exc.retry_after)
    return response


def _authentication_error(api: NinjaAPI, request: HttpRequest, exc: AuthenticationError) -> HttpResponse:
    detail = (
        exc.message
        if exc.message != "Unauthorized"
        else ("Authentication required: send Authorization: Bearer <token>, or log in at POST /api/auth/login.")
    )
    response = _respond(api, request, 401, detail)
    response["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


def _http_error(api: NinjaAPI, request: HttpRequest, exc: HttpError) -> HttpResponse:
    fields = {"body": [exc.message]} if exc.status_code == 400 else None
    detail = exc.message
    if detail == "Cannot parse request body":
        detail = "The request body is not valid JSON."
        fields = {"body": [detail]}
    return _respond(api, request, exc.status_code, detail, fields=fields)


def _django_validation_error(api: NinjaAPI, request: HttpRequest, exc: DjangoValidationError) -> HttpResponse:
    if hasattr(exc, "error_dict"):
        fields = {name: [str(m) for m in messages] for name, messages in exc.message_dict.items()}
    else:
        fields = {"body": [str(m) for m in exc.messages]}
    summary = "; ".join(f"{name}: {' '.join(messages)}" for name, messages in fields.items())
    return _respond(api, request, 422, f"Invalid input. {summary}", fields=fields)


def _permission_denied(api: NinjaAPI, request: HttpRequest, exc: PermissionDenied) -> HttpResponse:
    return _respond(api, request, 403, str(exc) or "You are not allowed to do this.")


def _not_found(api: NinjaAPI, request: HttpRequest, exc: Exception) -> HttpResponse:
    return _respond(api, request, 404, str(exc) or "Not found.")


def _does_not_exist(api: NinjaAPI, request: HttpRequest, exc: ObjectDoesNotExist) -> HttpResponse:
    return _respond(api, request, 404, str(exc) or "Not found.")


def _data_error(api: NinjaAPI, request: HttpRequest, exc: DataError) -> HttpResponse:
    # PostgreSQL refused a value (NUL in text, a number out of range): the input, not a bug.
    # Routers should prevent it in their schemas (core.schemas.NO_NUL, max_digits); this is the net.
    # PostgreSQL's own message names tables, columns and values: logged, never sent.
    logger.warning("DataError answered 422: %s", str(exc).splitlines()[0] if str(exc) else type(exc).__name__)
    detail = "A value is out of range or cannot be stored (too long, too large, or a NUL character)."
    return _respond(api, request, 422, f"Invalid input: {detail}", fields={"body": [detail]})


def _unexpected(api: NinjaAPI, request: HttpRequest, exc: Exception) -> HttpResponse:
    # Not ninja's default (a traceback as text/plain under DEBUG): let Django handle it, so a
    # PostgreSQL or Redis outage becomes the middleware's 503 with Retry-After, and a bug is
    # logged and answered by handler500 as JSON.
    raise exc


def install_error_handlers(target: NinjaAPI) -> None:
    """Make `target` answer every error in the uniform shape (also used by test-only APIs)."""
    for exc_class, handler in (
        (NinjaValidationError, _validation_error),
        (ServiceError, _service_error),
        (AuthenticationError, _authentication_error),
        (HttpError, _http_error),
        (DjangoValidationError, _django_validation_error),
        (PermissionDenied, _permission_denied),
        (Http404, _not_found),
        (ObjectDoesNotExist, _does_not_exist),
        (DataError, _data_error),
        (Exception, _unexpected),
    ):
        target.add_exception_handler(exc_class, partial(handler, target))

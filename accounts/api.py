from axes.exceptions import AxesBackendPermissionDenied
from django.contrib.auth import authenticate, login, logout
from django.http import HttpRequest
from django.middleware.csrf import get_token
from ninja import Router, Schema, Status
from pydantic import Field

from accounts.auth import api_auth
from accounts.lockout import cool_off_seconds, lockout_detail
from core.errors import NotAuthenticated, Throttled, UnsupportedMediaType
from core.http import ApiRequest
from core.schemas import ERRORS, NO_NUL, BodySchema, ErrorOut

router = Router(tags=["auth"])


class LoginIn(BodySchema):
    username: str = Field(min_length=1, max_length=150, pattern=NO_NUL)
    password: str = Field(min_length=1, max_length=4096, pattern=NO_NUL)


class SessionOut(Schema):
    username: str
    is_staff: bool
    # Browsers read it from the csrftoken cookie; API clients using the session send it back
    # in X-CSRFToken on unsafe requests.
    csrf_token: str


@router.post("/login", auth=None, response={200: SessionOut, 415: ErrorOut, **ERRORS})
def auth_login(request: HttpRequest, payload: LoginIn):
    # No CSRF token exists before login; requiring a JSON content type instead stops a cross-site
    # form from logging a victim into another account (browsers cannot send it without CORS).
    if request.content_type != "application/json":
        raise UnsupportedMediaType("Send the credentials as JSON (Content-Type: application/json).")
    try:
        user = authenticate(request, username=payload.username, password=payload.password)
    except AxesBackendPermissionDenied:
        # Locked out: accounts.lockout answers (AxesMiddleware replaces this response).
        raise Throttled(lockout_detail(), retry_after=cool_off_seconds()) from None
    if user is None:
        raise NotAuthenticated("Wrong username or password.", code="invalid_credentials")
    login(request, user)
    return {"username": user.get_username(), "is_staff": user.is_staff, "csrf_token": get_token(request)}


@router.post("/logout", auth=api_auth, response={204: None, **ERRORS})
def auth_logout(request: ApiRequest):
    logout(request)
    return Status(204, None)


@router.get("/me", auth=api_auth, response={200: SessionOut, **ERRORS})
def auth_me(request: ApiRequest):
    user = request.auth
    return {"username": user.get_username(), "is_staff": user.is_staff, "csrf_token": get_token(request)}

"""A test-only API with creating POSTs (Django auth Groups), to exercise lifecycle.idempotency and
the API's error handling without depending on any feature app."""

import time
import uuid

from django.contrib.auth.models import Group
from django.db import OperationalError, connection
from django.urls import path
from ninja import NinjaAPI, Schema, Status

from accounts.auth import api_auth
from core.errors import Conflict
from core.handlers import install_error_handlers
from lifecycle.idempotency.decorators import idempotent
from lifecycle.locks import distributed_lock

api = NinjaAPI(urls_namespace="idempotency-test", auth=api_auth)
install_error_handlers(api)


class GroupIn(Schema):
    name: str
    delay: float = 0.0


class GroupOut(Schema):
    id: int
    name: str


@api.post("/groups/", response={201: GroupOut})
@idempotent
def group_create(request, payload: GroupIn):
    if Group.objects.filter(name=payload.name).exists():
        raise Conflict(f"Group {payload.name!r} exists.")
    group = Group.objects.create(name=payload.name)
    # Lets a test hold the transaction open (key row uncommitted) while a twin request arrives.
    time.sleep(payload.delay)
    return Status(201, group)


@api.post("/groups-unchecked/", response={201: GroupOut})
@idempotent
def group_create_unchecked(request, payload: GroupIn):
    # Checks nothing and never conflicts: only the key can keep a retry from a second group.
    group = Group.objects.create(name=f"{payload.name}-{uuid.uuid4().hex}")
    time.sleep(payload.delay)
    return Status(201, group)


@api.post("/groups-failing/", response={201: GroupOut})
@idempotent
def group_create_failing(request, payload: GroupIn):
    Group.objects.create(name=payload.name)
    raise Conflict("Refused after writing: the write and the key must both be rolled back.")


@api.get("/outage/")
def outage(request):
    raise OperationalError("connection to server at 127.0.0.1 failed: Connection refused")


@api.post("/atomicity/", response={201: dict})
@idempotent
def atomicity(request, payload: GroupIn):
    return Status(201, {"in_atomic_block": connection.in_atomic_block})


@api.post("/busy/")
def busy(request):
    with distributed_lock.acquire("api-busy-test", timeout=0):
        return {"done": True}


urlpatterns = [path("api/", api.urls)]

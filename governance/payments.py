"""The payment processor's webhook signature, verified the way Stripe's is.

Header `Payment-Signature: t=<unix seconds>,v1=<hex HMAC-SHA256 of "<t>.<raw body>">`, keyed with
GOVERNANCE_PAYMENT_WEBHOOK_SECRET. Several `v1` entries may be given (the processor signs with
the old and the new secret while one is rolled); one matching is enough. The signed timestamp
must be within GOVERNANCE_PAYMENT_WEBHOOK_TOLERANCE seconds of now, so a captured delivery cannot
be replayed later; within that window a replay is harmless, since a payment reference is applied
once (governance.services.purchase_settle).
"""

from __future__ import annotations

import hashlib
import hmac
import time

from core.errors import ServiceError
from governance.conf import governance_settings

HEADER = "Payment-Signature"
MAX_HEADER_LENGTH = 1024


class InvalidSignature(ServiceError):
    status = 400
    code = "invalid_signature"

    def __init__(self, detail: str):
        super().__init__(detail, fields={HEADER: [detail]})


def sign(body: bytes, *, secret: str, timestamp: int | None = None) -> str:
    """The header value for `body`: what the processor sends (and the tests and chaos harness)."""
    t = int(time.time()) if timestamp is None else timestamp
    digest = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256).hexdigest()
    return f"t={t},v1={digest}"


def verify(body: bytes, header: str | None, *, now: float | None = None) -> int:
    """The signed timestamp if `header` signs `body` with our secret, else InvalidSignature."""
    secret = governance_settings.PAYMENT_WEBHOOK_SECRET
    if not secret:
        raise InvalidSignature("Payment webhooks are not configured here (no signing secret).")
    if not header:
        raise InvalidSignature(f"The {HEADER} header is missing.")
    if len(header) > MAX_HEADER_LENGTH:
        raise InvalidSignature(f"The {HEADER} header is too long.")
    timestamp: int | None = None
    signatures: list[str] = []
    for part in header.split(","):
        name, _, value = part.strip().partition("=")
        if name == "t" and value.isdigit() and len(value) <= 12:
            timestamp = int(value)
        elif name == "v1" and value:
            signatures.append(value)
    if timestamp is None or not signatures:
        raise InvalidSignature(f"The {HEADER} header must be t=<unix seconds>,v1=<hex HMAC-SHA256>.")
    tolerance = governance_settings.PAYMENT_WEBHOOK_TOLERANCE
    if abs((time.time() if now is None else now) - timestamp) > tolerance:
        raise InvalidSignature(f"The signature's timestamp is more than {tolerance} s from now.")
    expected = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    # Every candidate is compared in constant time, and all of them are compared.
    matched = False
    for candidate in signatures:
        matched |= hmac.compare_digest(expected.encode(), candidate.encode("ascii", "replace"))
    if not matched:
        raise InvalidSignature("The signature does not match the body.")
    return timestamp

"""An API client as a real user's app would behave: retries with the same Idempotency-Key.

Every operation is recorded with each of its HTTP attempts. A network error, 502, 503 or 504 is
retried (honouring Retry-After, bounded by the operation's deadline); anything else is final.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterable
from typing import Any

import requests

from chaos.recorder import ABANDONED, ACKED, REJECTED, UNEXPECTED, Attempt, Op, Recorder

RETRYABLE_STATUS = {502, 503, 504}
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 30.0


class Api:
    def __init__(self, base_url: str, recorder: Recorder, *, op_deadline: float = 60.0, stop: threading.Event):
        self.base_url = base_url
        self.recorder = recorder
        self.op_deadline = op_deadline
        self.stop = stop
        self.http = requests.Session()
        self.token: str | None = None

    # -- auth ---------------------------------------------------------------------------------
    def use_token(self, token: str) -> None:
        self.token = token

    def _headers(self, method: str) -> dict[str, str]:
        headers = {"Accept": "application/json"}
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        elif method not in ("GET", "HEAD"):
            csrf = self.http.cookies.get("csrftoken")
            if csrf:
                headers["X-CSRFToken"] = csrf
                headers["Referer"] = self.base_url + "/"
        return headers

    # -- one operation ------------------------------------------------------------------------
    def call(
        self,
        flow: str,
        kind: str,
        method: str,
        path: str,
        *,
        json: Any = None,
        ok: Iterable[int] = (200, 201, 202),
        definitive: Iterable[int] = (),
        idempotent: bool = True,
        idempotency_key: bool = False,
        data: dict[str, Any] | None = None,
        write: bool = True,
        raw: bytes | None = None,
        headers: dict[str, str] | None = None,
    ) -> Op:
        """Run one logical operation to a final outcome, retrying transient failures.

        `idempotency_key`: send one key for every attempt (a creating POST); the service must then
        apply it once whatever happened to the earlier attempts. `idempotent=False`: never retry
        (the flow handles an unknown outcome itself). `raw`: send these exact bytes as the JSON
        body (a signed webhook), with the extra `headers`.
        """
        ok, definitive = set(ok), set(definitive)
        op = self.recorder.new_op(flow, kind, data, write=write)
        key = str(uuid.uuid4()) if idempotency_key else None
        if key:
            op.data["idempotency_key"] = key
        deadline = time.monotonic() + self.op_deadline
        delay = 0.2
        while True:
            attempt = Attempt(id=f"{op.id}.{len(op.attempts) + 1}", t0=self.recorder.now())
            op.attempts.append(attempt)
            sent = self._headers(method) | (headers or {})
            sent["X-Chaos-Id"] = attempt.id
            if key:
                sent["Idempotency-Key"] = key
            if raw is not None:
                sent["Content-Type"] = "application/json"
            retry_after = None
            try:
                response = self.http.request(
                    method,
                    self.base_url + path,
                    json=json if raw is None else None,
                    data=raw,
                    headers=sent,
                    timeout=(CONNECT_TIMEOUT, READ_TIMEOUT),
                )
                attempt.status = response.status_code
                retry_after = response.headers.get("Retry-After")
            except requests.RequestException as exc:
                attempt.error = type(exc).__name__
                response = None
            attempt.t1 = self.recorder.now()
            if response is not None and response.status_code == 503:
                attempt.dependency = _dependency(response)
            if response is not None and response.status_code not in RETRYABLE_STATUS:
                op.status = response.status_code
                try:
                    op.body = response.json()
                except ValueError:
                    op.body = response.text[:500]
                if response.status_code in ok:
                    op.outcome = ACKED
                elif response.status_code in definitive:
                    op.outcome = REJECTED
                else:
                    op.outcome = UNEXPECTED
                break
            if not idempotent or time.monotonic() + delay > deadline:
                op.status = attempt.status
                op.outcome = ABANDONED
                break
            wait = delay
            if retry_after and retry_after.isdigit():
                wait = min(max(wait, float(retry_after)), 2.0)
            time.sleep(wait)
            delay = min(delay * 2, 2.0)
        op.t1 = self.recorder.now()
        return op


def _dependency(response: requests.Response) -> str | None:
    """The dependency a 503 names (the service's error body), for the report's causes."""
    try:
        body = response.json()
    except ValueError:
        return None
    return body.get("dependency") if isinstance(body, dict) else None

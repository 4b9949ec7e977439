"""LLM backends that generate the Queen's replies, chosen by `QUEEN_LLM_BACKEND` (a dotted path).

A backend is called from a job worker's thread with the conversation's history and a deadline;
`cancel()` comes from another thread (a stopping worker) and must make a running `generate`
return soon. The reply job does not depend on it: it stops waiting for `generate` at once
anyway and hands its job back; `cancel()` is there so that the call stops costing too.
"""

from __future__ import annotations

import contextlib
import threading
import time
from functools import cache
from typing import Any

from django.utils.module_loading import import_string

from hive.conf import queen_settings


class LLMError(Exception):
    """A call that failed (refused, timed out, unreachable): the reply is retried with backoff."""


class LLMCancelled(Exception):
    """The call was cancelled (the worker is stopping): the job is handed back, no attempt spent."""


class LLMBackend:
    """What a backend provides. `history` is the conversation up to the turn answered, oldest
    first, each turn a dict with `seq`, `role` ("user" or "assistant") and `content`;
    `deadline` is a `time.monotonic()` value after which the call must have given up."""

    def generate(self, history: list[dict[str, Any]], *, deadline: float) -> str:
        raise NotImplementedError

    def cancel(self) -> None:
        """Ask a running `generate` (in another thread) to stop; it then raises LLMCancelled."""


class LocalBackend(LLMBackend):
    """Not a language model: a deterministic reply made from the history, after
    `QUEEN_LOCAL_DELAY` seconds (so that tests can kill a worker mid-generation). No network."""

    def __init__(self) -> None:
        self._cancelled = threading.Event()

    def generate(self, history: list[dict[str, Any]], *, deadline: float) -> str:
        delay = float(queen_settings.LOCAL_DELAY)
        if self._cancelled.wait(max(0.0, min(delay, deadline - time.monotonic()))):
            raise LLMCancelled("cancelled")
        if time.monotonic() >= deadline and delay > 0:
            raise LLMError("deadline passed")
        return local_reply(history)

    def cancel(self) -> None:
        self._cancelled.set()


def local_reply(history: list[dict[str, Any]]) -> str:
    users = [turn for turn in history if turn["role"] == "user"]
    last = users[-1] if users else {"seq": 0, "content": ""}
    said = " ".join(str(last["content"]).split())[:200]
    return f"The Queen answers turn {last['seq']} ({len(history)} turns so far): you said “{said}”."


class GeminiBackend(LLMBackend):
    """Gemini on Vertex AI through google-genai: project, location, model and system prompt from
    settings, credentials from the environment (Workload Identity), an endpoint of its own in
    tests (`QUEEN_GEMINI_BASE_URL`)."""

    def __init__(self, *, credentials: Any = None) -> None:
        self.credentials = credentials
        self._cancelled = threading.Event()
        self._client: Any = None

    def _new_client(self, timeout: float) -> Any:
        from google import genai
        from google.genai import types

        options = types.HttpOptions(timeout=max(1, int(timeout * 1000)))
        if queen_settings.GEMINI_BASE_URL:
            options.base_url = queen_settings.GEMINI_BASE_URL
        return genai.Client(
            vertexai=True,
            project=queen_settings.VERTEX_PROJECT or None,
            location=queen_settings.VERTEX_LOCATION,
            credentials=self.credentials,
            http_options=options,
        )

    def request(self, history: list[dict[str, Any]]) -> dict[str, Any]:
        """The request's contents and config (what a test checks against its server)."""
        from google.genai import types

        contents = [
            types.Content(role="user" if turn["role"] == "user" else "model", parts=[types.Part(text=turn["content"])])
            for turn in history
        ]
        config = types.GenerateContentConfig(system_instruction=queen_settings.SYSTEM_PROMPT)
        return {"model": queen_settings.GEMINI_MODEL, "contents": contents, "config": config}

    def generate(self, history: list[dict[str, Any]], *, deadline: float) -> str:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise LLMError("deadline passed")
        try:
            self._client = self._new_client(remaining)
            response = self._client.models.generate_content(**self.request(history))
        except Exception as exc:
            if self._cancelled.is_set():
                raise LLMCancelled("cancelled") from exc
            raise LLMError(f"{type(exc).__name__}: {exc}") from exc
        if self._cancelled.is_set():
            raise LLMCancelled("cancelled")
        text = (response.text or "").strip()
        if not text:
            raise LLMError("empty reply")
        return text

    def cancel(self) -> None:
        self._cancelled.set()
        client = self._client
        if client is not None:
            # Closing the HTTP client makes the blocked request fail now rather than at its timeout.
            with contextlib.suppress(Exception):  # best effort: the job hands back regardless
                client.close()


@cache
def _backend_class(path: str) -> type[LLMBackend]:
    cls = import_string(path)
    if not (isinstance(cls, type) and issubclass(cls, LLMBackend)):
        raise TypeError(f"QUEEN_LLM_BACKEND {path} is not an hive.llm.LLMBackend subclass.")
    return cls


def llm_backend() -> LLMBackend:
    """A new backend instance for one generation (cancel() applies to that generation only)."""
    return _backend_class(queen_settings.LLM_BACKEND)()

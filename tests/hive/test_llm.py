"""LLM backends: chosen by dotted path; the local one deterministic and cancellable; Gemini's
request shape checked against a local HTTP server (nothing outside is reachable)."""

import json
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from google.oauth2.credentials import Credentials

from hive.llm import GeminiBackend, LLMCancelled, LLMError, LocalBackend, llm_backend, local_reply

HISTORY = [
    {"seq": 1, "role": "user", "content": "Who rules the hive?"},
    {"seq": 2, "role": "assistant", "content": "The Queen."},
    {"seq": 3, "role": "user", "content": "And where is the clover?"},
]


def test_llm_backend__by_dotted_path(settings):
    settings.QUEEN_LLM_BACKEND = "hive.llm.LocalBackend"
    assert isinstance(llm_backend(), LocalBackend)
    settings.QUEEN_LLM_BACKEND = "hive.conf.HiveSettings"
    with pytest.raises(TypeError, match="QUEEN_LLM_BACKEND"):
        llm_backend()


def test_local_backend__deterministic_from_the_history(settings):
    settings.QUEEN_LOCAL_DELAY = 0
    reply = LocalBackend().generate(HISTORY, deadline=time.monotonic() + 5)
    assert reply == LocalBackend().generate(HISTORY, deadline=time.monotonic() + 5) == local_reply(HISTORY)
    assert "turn 3" in reply
    assert "And where is the clover?" in reply
    assert local_reply(HISTORY[:1]) != reply


def test_local_backend__cancel_stops_a_running_call(settings):
    settings.QUEEN_LOCAL_DELAY = 30
    backend = LocalBackend()
    threading.Timer(0.2, backend.cancel).start()
    started = time.monotonic()
    with pytest.raises(LLMCancelled):
        backend.generate(HISTORY, deadline=time.monotonic() + 60)
    assert time.monotonic() - started < 2


def test_local_backend__gives_up_at_the_deadline(settings):
    settings.QUEEN_LOCAL_DELAY = 30
    with pytest.raises(LLMError):
        LocalBackend().generate(HISTORY, deadline=time.monotonic() + 0.2)


@pytest.fixture
def vertex_server():
    """A local stand-in for Vertex AI: records each request, answers as generateContent does."""
    seen: list[dict] = []
    answer = {"status": 200}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            seen.append({"path": self.path, "body": body, "authorization": self.headers["Authorization"]})
            if answer["status"] != 200:
                payload = {"error": {"code": answer["status"], "message": "overloaded", "status": "UNAVAILABLE"}}
            else:
                payload = {
                    "candidates": [{"content": {"role": "model", "parts": [{"text": "East meadow, by the oak."}]}}],
                }
            data = json.dumps(payload).encode()
            self.send_response(answer["status"])
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_address[1]}", seen, answer
    server.shutdown()
    server.server_close()


def test_gemini_backend__request_shape(settings, vertex_server):
    url, seen, _ = vertex_server
    settings.QUEEN_GEMINI_BASE_URL = url
    settings.QUEEN_VERTEX_PROJECT = "omk-hive"
    settings.QUEEN_VERTEX_LOCATION = "europe-west1"
    settings.QUEEN_GEMINI_MODEL = "gemini-test"
    settings.QUEEN_SYSTEM_PROMPT = "You are the Queen."
    backend = GeminiBackend(credentials=Credentials(token="workload-identity-token"))

    assert backend.generate(HISTORY, deadline=time.monotonic() + 10) == "East meadow, by the oak."

    [request] = seen
    assert request["path"].endswith(
        "/projects/omk-hive/locations/europe-west1/publishers/google/models/gemini-test:generateContent"
    )
    assert request["body"]["contents"] == [
        {"role": "user", "parts": [{"text": "Who rules the hive?"}]},
        {"role": "model", "parts": [{"text": "The Queen."}]},
        {"role": "user", "parts": [{"text": "And where is the clover?"}]},
    ]
    assert request["body"]["systemInstruction"]["parts"] == [{"text": "You are the Queen."}]
    assert request["authorization"] == "Bearer workload-identity-token"


def test_gemini_backend__a_refused_call_is_an_llm_error(settings, vertex_server):
    url, seen, answer = vertex_server
    answer["status"] = 503
    settings.QUEEN_GEMINI_BASE_URL = url
    settings.QUEEN_VERTEX_PROJECT = "omk-hive"
    with pytest.raises(LLMError):
        GeminiBackend(credentials=Credentials(token="workload-identity-token")).generate(
            HISTORY, deadline=time.monotonic() + 10
        )
    assert len(seen) == 1  # reached the server, refused there

"""A local fake OpenAI-compatible server (127.0.0.1) that plays queued answers and faults.

Each POST /v1/chat/completions takes the next queued step:
    {"answer": "<raw text>"}                  200; as a tool call if the request sent tools,
                                              else as message content; "finish_reason" optional
    {"refusal": "I can't help with that"}     200 with message.refusal and no content
    {"status": 429, "headers": {...}}         an error status with an OpenAI-style error body
    {"hang": 5}                               sleep before answering (past the client timeout)
The requests it received are kept in `.requests` (parsed JSON bodies).
"""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest


class FakeOpenAI:
    """The server: `.url` (…/v1), `.enqueue(steps)`, `.requests`."""

    def __init__(self) -> None:
        self.steps: deque[dict[str, Any]] = deque()
        self.requests: list[dict[str, Any]] = []
        self.times: list[float] = []
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:  # keep test output clean
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))))
                fake.requests.append(body)
                fake.times.append(time.monotonic())
                step = fake.steps.popleft() if fake.steps else {"status": 500, "message": "empty"}
                if "hang" in step:
                    time.sleep(step["hang"])
                    step = step.get("then", {"status": 500})
                if "status" in step:
                    return self._send(step["status"], {"error": {
                        "message": step.get("message", "fault"), "type": "server_error",
                        "code": None}}, step.get("headers", {}))
                return self._send(200, fake.completion(body, step))

            def _send(self, status: int, payload: Any, headers: dict[str, str] | None = None) -> None:
                data = json.dumps(payload).encode()
                try:
                    self.send_response(status)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    for k, v in (headers or {}).items():
                        self.send_header(k, v)
                    self.end_headers()
                    self.wfile.write(data)
                except (BrokenPipeError, ConnectionResetError):
                    pass  # the client gave up (timeout test)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def enqueue(self, steps: list[dict[str, Any]]) -> FakeOpenAI:
        """Steps → appended to the queue (returns self)."""
        self.steps.extend(steps)
        return self

    @staticmethod
    def completion(request: dict[str, Any], step: dict[str, Any]) -> dict[str, Any]:
        """Request + answer step → an OpenAI chat.completion object."""
        text = step.get("answer")
        message: dict[str, Any] = {"role": "assistant", "content": None, "refusal": None}
        if "refusal" in step:
            message["refusal"] = step["refusal"]
        elif request.get("tools"):
            name = request["tools"][0]["function"]["name"]
            message["tool_calls"] = [{"id": "call_1", "type": "function",
                                      "function": {"name": name, "arguments": text}}]
        else:
            message["content"] = text
        prompt = sum(len(str(m.get("content", ""))) for m in request.get("messages", [])) // 4
        return {"id": "chatcmpl-fake", "object": "chat.completion", "created": int(time.time()),
                "model": request.get("model", "fake"),
                "choices": [{"index": 0, "message": message,
                             "finish_reason": step.get("finish_reason", "stop")}],
                "usage": {"prompt_tokens": prompt, "completion_tokens": len(text or "") // 4,
                          "total_tokens": prompt + len(text or "") // 4}}

    def close(self) -> None:
        """Stop serving."""
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def fake_openai() -> Iterator[FakeOpenAI]:
    """A running FakeOpenAI for one test."""
    fake = FakeOpenAI()
    yield fake
    fake.close()

"""A small OpenAI-compatible chat endpoint on loopback for testing the LLM code paths.

It answers by task (recognised from the system prompt) with deterministic, content-dependent
JSON, reports token usage, and fails the first ``fail_first`` requests with HTTP 500 so retries
are exercised. The real ``openai`` client talks to it over HTTP.
"""

from __future__ import annotations

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LLMStub:
    def __init__(self, keyword: str = "football", fail_first: int = 0, garbage_first: int = 0, refuse_schemas: bool = False):
        self.keyword = keyword
        self.fail_first = fail_first
        self.garbage_first = garbage_first  # answer prose instead of JSON this many times
        self.refuse_schemas = refuse_schemas  # 400 on response_format, as servers without structured output do
        self.requests: list[dict] = []
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *a):  # quiet
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                with stub._lock:
                    stub.requests.append(body)
                    fail = stub.fail_first > 0
                    if fail:
                        stub.fail_first -= 1
                if fail:
                    self.send_response(500)
                    self.end_headers()
                    self.wfile.write(b'{"error": {"message": "try again"}}')
                    return
                if stub.refuse_schemas and "response_format" in body:
                    data = b'{"error": {"message": "response_format is not supported", "type": "invalid_request_error"}}'
                    self.send_response(400)
                    self.send_header("Content-Type", "application/json")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                with stub._lock:
                    garbage = stub.garbage_first > 0
                    if garbage:
                        stub.garbage_first -= 1
                content = "Sure! The feature is about" if garbage else stub.answer(body["messages"][0]["content"],
                                                                                  body["messages"][-1]["content"])
                resp = {"id": "x", "object": "chat.completion", "created": 0, "model": body.get("model", "stub"),
                        "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}],
                        "usage": {"prompt_tokens": len(body["messages"][-1]["content"].split()), "completion_tokens": 7, "total_tokens": 0}}
                data = json.dumps(resp).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/v1"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def answer(self, system: str, user: str) -> str:
        kw = self.keyword
        if "label features" in system:
            first = re.search(r"<<(.+?)>>", user)
            return json.dumps({"label": f"stub label {first.group(1) if first else ''}".strip(), "description": "written by the stub"})
        if "select sparse-autoencoder features" in system:
            ids = [int(m) for m in re.findall(r"^(\d+):", user, re.M)]
            return json.dumps({"keep": ids[: max(1, len(ids) // 2)]})
        if "short example texts" in system:
            n = int(re.search(r"Write (\d+)", user).group(1))
            return json.dumps({"examples": [f"The {kw} match ended {i}-0 after extra time." for i in range(n)]})
        if "judge how strongly" in system:
            docs = re.findall(r"^\[\d+\] (.*)$", user, re.M)
            return json.dumps({"scores": [10 if kw in d.lower() else 0 for d in docs]})
        if "testable hypotheses" in system:
            return "```json\n" + json.dumps({"hypotheses": [f"Texts in A mention {kw} more often than texts in B"]}) + "\n```"
        if "check whether a single text" in system:
            text = user.split("Text:", 1)[-1].lower()
            return json.dumps({"answer": "yes" if kw in text else "no"})
        return "{}"

    def close(self) -> None:
        self.server.shutdown()


def json_endpoint(status: int, body: dict, delay: float = 0.0, seen: list | None = None) -> ThreadingHTTPServer:
    """A loopback HTTP server answering every GET and POST with ``status`` and ``body`` after
    ``delay`` seconds, appending each request's headers to ``seen``; serving until ``shutdown()``.
    (An upstream that refuses a key, one that stalls, a Qdrant that records the key it is sent.)"""
    import time

    data = json.dumps(body).encode()

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *a):
            pass

        def _answer(self):
            if seen is not None:
                seen.append(dict(self.headers))
            self.rfile.read(int(self.headers.get("content-length", 0) or 0))
            time.sleep(delay)
            try:
                self.send_response(status)
                self.send_header("content-type", "application/json")
                self.send_header("content-length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)
            except OSError:  # the client gave up waiting
                pass

        do_GET = do_POST = _answer

    srv = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    return srv


def chat_answer(content: str) -> dict:
    """An OpenAI chat-completion body whose message is ``content``."""
    return {"id": "x", "object": "chat.completion", "created": 0, "model": "m",
            "choices": [{"index": 0, "finish_reason": "stop", "message": {"role": "assistant", "content": content}}]}

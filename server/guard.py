"""The ASGI layer in front of every request: identify the key, bound the body, log, audit.

Why a raw ASGI wrapper rather than a FastAPI middleware or dependency: a dependency runs only
after FastAPI has read (and parsed) the body, and a ``Content-Length`` check misses chunked
bodies. An unauthenticated 200 MB chunked POST was read in full before its 401 (+460 MB server
memory). Here the key is checked from the headers before a byte of the body is read, and the
body is read by us, chunk by chunk, up to ``max_body`` bytes (413 beyond it, reading no
further), then replayed to the app.

Every response carries ``X-Request-Id``; an unexpected exception becomes an opaque 500 naming
only that id (the trace goes to the log). Each ``/v1/`` request is one audit record
(:class:`AuditLog`).
"""

from __future__ import annotations

import json
import logging
import os
import re
import threading
import time
import uuid
from pathlib import Path

from server.auth import Authenticator

log = logging.getLogger("saedex.server")
PUBLIC_PREFIXES = ("/healthz", "/static/", "/openapi.json", "/docs", "/favicon")
_INDEX_IN_PATH = re.compile(r"^/v1/indexes/([^/]+)")


class AuditLog:
    """Append-only JSON lines (ASCII): time, request id, key id (never the key), index, route, status,
    query, result count, latency. Opened with O_APPEND, one ``write`` per record, so concurrent
    records never interleave and nothing earlier is ever rewritten."""

    def __init__(self, path: str | Path | None):
        self.path = Path(path) if path else None
        self._lock = threading.Lock()
        self._fd: int | None = None
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)

    def write(self, record: dict) -> None:
        if self._fd is None:
            return
        # ASCII-only JSON: a query holding U+2028, U+0085 or a lone surrogate stays on its line
        # for every reader (str.splitlines and many log tools split on those) and encodes cleanly
        line = (json.dumps(record, ensure_ascii=True, default=str) + "\n").encode()
        with self._lock:
            os.write(self._fd, line)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


async def _send_json(send, status: int, body: dict, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())] + (headers or [])})
    await send({"type": "http.response.body", "body": data})


class Guard:
    def __init__(self, app, authenticator: Authenticator, max_body: int, audit: AuditLog):
        self.app = app
        self.auth = authenticator
        self.max_body = max_body
        self.audit = audit

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = uuid.uuid4().hex[:12]
        t0 = time.perf_counter()
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        status_box = [0]
        started = [False]

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                started[0] = True
                status_box[0] = message["status"]
                message = {**message, "headers": list(message.get("headers", [])) + [(b"x-request-id", rid.encode())]}
            await send(message)

        path = scope.get("path", "")
        headers = {k.lower(): v for k, v in scope.get("headers", [])}
        key = None
        try:
            if path.startswith("/v1/"):
                key = self.auth.identify(headers.get(b"authorization", b"").decode("latin-1"))
                if key is None:
                    await _send_json(send_with_id, 401, {"detail": "missing or invalid API key"},
                                     [(b"www-authenticate", b"Bearer")])
                    return
                state["api_key"] = key
            body = await self._read_body(headers, receive, send_with_id)
            if body is None:
                return  # 413 sent
            await self.app(scope, _replay(body, receive), send_with_id)
        except Exception:  # noqa: BLE001 - never leak a trace to a client
            log.exception("request %s failed", rid)
            if not started[0]:
                await _send_json(send_with_id, 500, {"detail": "internal error", "request_id": rid})
        finally:
            ms = (time.perf_counter() - t0) * 1000
            log.info("%s %s %s %d %.1fms", rid, scope.get("method"), path, status_box[0], ms)
            if path.startswith("/v1/"):
                m = _INDEX_IN_PATH.match(path)
                extra = state.get("audit") or {}
                self.audit.write({"time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1000) % 1000:03d}Z",
                                  "request_id": rid, "key_id": key.id if key else None, "index": m.group(1) if m else None,
                                  "method": scope.get("method"), "route": path, "status": status_box[0],
                                  "latency_ms": round(ms, 1), **extra})

    async def _read_body(self, headers: dict, receive, send) -> bytes | None:
        """The whole body, or None after answering 413 (without reading past the limit)."""
        length = headers.get(b"content-length")
        too_large = {"detail": f"request body too large (max {self.max_body} bytes)"}
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _send_json(send, 413, too_large, [(b"connection", b"close")])
            return None
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                await _send_json(send, 413, too_large, [(b"connection", b"close")])
                return None
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        return b"".join(chunks)


def _replay(body: bytes, receive):
    sent = [False]

    async def replay():
        if not sent[0]:
            sent[0] = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()  # then wait for the disconnect, as the server would report it

    return replay

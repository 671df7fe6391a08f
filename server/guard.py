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

import asyncio
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
    records never interleave and nothing earlier is ever rewritten.

    Bounded, because unauthenticated requests write to it too (20 requests with 60 KB paths once
    added 1.2 MB): every logged string is cut to :data:`MAX_FIELD_CHARS`; the file is rotated at
    ``max_bytes`` (``audit.jsonl`` -> ``audit.jsonl.1`` ... ``.{keep}``, the oldest deleted); and
    records of unauthenticated requests are rate-limited (:data:`ANON_PER_MINUTE`), the excess
    counted and written as one ``suppressed`` record when the next minute starts."""

    MAX_FIELD_CHARS = 512
    ANON_PER_MINUTE = 120

    def __init__(self, path: str | Path | None, max_bytes: int = 64 * 1024 * 1024, keep: int = 5):
        self.path = Path(path) if path else None
        self.max_bytes, self.keep = max_bytes, keep
        self._lock = threading.Lock()
        self._fd: int | None = None
        self._size = 0
        self._minute, self._anon, self._suppressed = 0, 0, 0
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._open()

    def _open(self) -> None:
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
        self._size = os.fstat(self._fd).st_size

    def _rotate(self) -> None:
        os.close(self._fd)
        for n in range(self.keep - 1, 0, -1):
            older = self.path.with_name(f"{self.path.name}.{n}")
            if older.exists():
                older.replace(self.path.with_name(f"{self.path.name}.{n + 1}"))
        self.path.replace(self.path.with_name(f"{self.path.name}.1"))
        self._open()

    @classmethod
    def _short(cls, value):
        if isinstance(value, str):
            return value if len(value) <= cls.MAX_FIELD_CHARS else value[: cls.MAX_FIELD_CHARS] + f"...(+{len(value) - cls.MAX_FIELD_CHARS})"
        if isinstance(value, dict):
            return {cls._short(str(k)): cls._short(v) for k, v in list(value.items())[:64]}
        if isinstance(value, (list, tuple)):
            return [cls._short(v) for v in value[:64]]
        return value

    def write(self, record: dict, authenticated: bool = True) -> None:
        if self._fd is None:
            return
        with self._lock:
            minute = int(time.time() // 60)
            pending: list[dict] = []
            if minute != self._minute:
                if self._suppressed:
                    pending.append({"time": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "suppressed": self._suppressed,
                                    "note": f"unauthenticated requests past {self.ANON_PER_MINUTE}/minute, not logged one by one"})
                self._minute, self._anon, self._suppressed = minute, 0, 0
            if not authenticated:
                self._anon += 1
                if self._anon > self.ANON_PER_MINUTE:
                    self._suppressed += 1
                    record = None
            for rec in pending + ([record] if record is not None else []):
                # ASCII-only JSON: a query holding U+2028, U+0085 or a lone surrogate stays on its
                # line for every reader (str.splitlines and many log tools split on those)
                line = (json.dumps(self._short(rec), ensure_ascii=True, default=str) + "\n").encode()
                if self._size + len(line) > self.max_bytes and self._size > 0:
                    self._rotate()
                os.write(self._fd, line)
                self._size += len(line)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


async def _send_json(send, status: int, body: dict, headers: list[tuple[bytes, bytes]] | None = None) -> None:
    data = json.dumps(body).encode()
    await send({"type": "http.response.start", "status": status,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(data)).encode())] + (headers or [])})
    await send({"type": "http.response.body", "body": data})


SECURITY_HEADERS = [
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
    # the page loads only its own script and style; no inline script, no framing
    (b"content-security-policy", b"default-src 'self'; img-src 'self' data:; style-src 'self' 'unsafe-inline'; "
                                 b"frame-ancestors 'none'; base-uri 'none'; form-action 'none'"),
]
NO_STORE = (b"cache-control", b"no-store")  # API answers hold documents: never in a shared cache
LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
BODY_TIMEOUT_S = 30.0  # a client that stalls mid-upload holds a connection at most this long
REFUSAL_PAUSE_S = 0.5  # a rate-limited request waits this long for its 429


class RateLimit:
    """A token bucket per key: ``rate`` requests a second on average, bursts of ``2 * rate``.
    Checked from the headers, before a body byte is read, so a flood of requests that would be
    refused anyway (1,000-float filters, ``top=20000``) costs the event loop almost nothing; under
    the abuse benchmark such floods ran at 120-270 requests a second from one key."""

    def __init__(self, rate: float):
        self.rate, self.burst = float(rate), 2.0 * float(rate)
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def allow(self, key_id: str) -> bool:
        if self.rate <= 0:
            return True
        now = time.monotonic()
        with self._lock:
            tokens, last = self._buckets.get(key_id, (self.burst, now))
            tokens = min(self.burst, tokens + (now - last) * self.rate)
            if tokens < 1.0:
                self._buckets[key_id] = (tokens, now)
                return False
            self._buckets[key_id] = (tokens - 1.0, now)
            return True


def _host_name(host_header: bytes) -> str:
    host = host_header.decode("latin-1").strip().lower()
    if host.startswith("["):
        return host[: host.find("]") + 1] if "]" in host else host
    return host.rsplit(":", 1)[0] if host.count(":") == 1 else host


class Guard:
    def __init__(self, app, authenticator: Authenticator, max_body: int, audit: AuditLog, body_timeout: float = BODY_TIMEOUT_S,
                 rate_limit: float = 0.0):
        self.app = app
        self.auth = authenticator
        self.max_body = max_body
        self.audit = audit
        self.body_timeout = body_timeout
        self.limits = RateLimit(rate_limit)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        rid = uuid.uuid4().hex[:12]
        t0 = time.perf_counter()
        state = scope.setdefault("state", {})
        state["request_id"] = rid
        status_box = [0]
        started = [False]

        path = scope.get("path", "")
        # /docs (Swagger UI, off unless asked for) loads its assets from a CDN: no CSP there
        security = [h for h in SECURITY_HEADERS if h[0] != b"content-security-policy"] if path.startswith("/docs") else SECURITY_HEADERS
        extra_headers = [(b"x-request-id", rid.encode())] + security + ([NO_STORE] if path.startswith("/v1/") else [])

        async def send_with_id(message):
            if message["type"] == "http.response.start":
                started[0] = True
                status_box[0] = message["status"]
                message = {**message, "headers": list(message.get("headers", [])) + extra_headers}
            await send(message)

        raw_headers = scope.get("headers", [])
        headers = {k.lower(): v for k, v in raw_headers}
        key = None
        try:
            if self.auth.open and _host_name(headers.get(b"host", b"localhost")) not in LOOPBACK_HOSTS:
                # a keyless server is open only to this machine; a page on another site that
                # rebinds its DNS name to 127.0.0.1 arrives with its own name as Host
                await _send_json(send_with_id, 421, {"detail": "this server has no API keys and answers only to localhost"})
                return
            if path.startswith("/v1/"):
                auths = [v for k, v in raw_headers if k.lower() == b"authorization"]
                # two Authorization headers: ambiguous (a proxy may read the first, we the last)
                key = self.auth.identify(auths[0].decode("latin-1")) if len(auths) == 1 else (self.auth.OPEN if self.auth.open else None)
                if key is None:
                    await _send_json(send_with_id, 401, {"detail": "missing or invalid API key"},
                                     [(b"www-authenticate", b"Bearer")])
                    return
                state["api_key"] = key
                if not self.limits.allow(key.id):
                    # answered after a pause (an await: no thread held), so a client that retries
                    # at once cannot turn refusals into a flood: unthrottled 429s at ~400 a second
                    # still cost the event loop a fifth of a core
                    await asyncio.sleep(REFUSAL_PAUSE_S)
                    await _send_json(send_with_id, 429, {"detail": f"key {key.id!r} is over {self.limits.rate:g} requests a second"},
                                     [(b"retry-after", b"1")])
                    return
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
                                  "latency_ms": round(ms, 1), **extra}, authenticated=key is not None)

    async def _read_body(self, headers: dict, receive, send) -> bytes | None:
        """The whole body, or None after answering 413 (without reading past the limit)."""
        length = headers.get(b"content-length")
        too_large = {"detail": f"request body too large (max {self.max_body} bytes)"}
        if length is not None and (not length.isdigit() or int(length) > self.max_body):
            await _send_json(send, 413, too_large, [(b"connection", b"close")])
            return None
        chunks, size = [], 0
        while True:
            try:
                message = await asyncio.wait_for(receive(), self.body_timeout)
            except asyncio.TimeoutError:
                await _send_json(send, 408, {"detail": f"request body not received within {self.body_timeout:.0f} s"},
                                 [(b"connection", b"close")])
                return None
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

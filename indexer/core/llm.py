"""Thin client for any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, llama.cpp server).

Configured by ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` and a model name (``SAEDEX_LLM_MODEL`` or
an explicit argument). Adds what every LLM step in saedex needs: JSON answers, retries with
exponential back-off, bounded concurrency and token accounting.
"""

from __future__ import annotations

import json
import logging
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable

from indexer.core.errors import InputError, UnavailableError
from indexer.core.settings import settings

log = logging.getLogger("saedex.llm")


class LLMNotConfigured(InputError):
    """An LLM step was asked for without an endpoint and model configured."""


class LLMUnavailable(UnavailableError):
    """The LLM endpoint failed every attempt (down, overloaded, timing out)."""


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    failures: int = 0
    unparseable: int = 0  # answers that were not JSON (each asked for once more)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, u) -> None:
        with self._lock:
            self.calls += 1
            if u is not None:
                self.prompt_tokens += int(getattr(u, "prompt_tokens", 0) or 0)
                self.completion_tokens += int(getattr(u, "completion_tokens", 0) or 0)

    def as_dict(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens, "calls": self.calls, "failures": self.failures,
                "unparseable": self.unparseable}


def llm_model(explicit: str | None = None) -> str | None:
    return explicit or settings().llm_model


def llm_available(model: str | None = None) -> bool:
    s = settings()
    return bool(llm_model(model)) and bool(s.llm_base_url or s.llm_api_key)


def require_llm(model: str | None, what: str) -> str:
    m = llm_model(model)
    if not llm_available(m):
        raise LLMNotConfigured(
            f"{what} needs an LLM: set OPENAI_BASE_URL (and OPENAI_API_KEY if the endpoint wants one) and a model "
            f"(--llm MODEL or SAEDEX_LLM_MODEL)"
        )
    return m  # type: ignore[return-value]


RETRIED_4XX = (408, 409, 429)  # time-out, conflict, rate limit: worth another try


def failure_reason(e: BaseException | None) -> str:
    """What a client may learn of a failed LLM call: the endpoint's HTTP status or the kind of
    transport failure, nothing of the upstream's message."""
    from openai import APIConnectionError, APIStatusError, APITimeoutError

    if isinstance(e, APIStatusError):
        return f"LLM endpoint failed (status {e.status_code})"
    if isinstance(e, APITimeoutError):
        return "LLM endpoint failed (timed out)"
    if isinstance(e, APIConnectionError):
        return "LLM endpoint failed (connection error)"
    return "LLM endpoint failed"


DEFAULT_TIMEOUT_S = 120.0  # a local server answering a long prompt on a CPU is slow, not dead
LOCAL_CONCURRENCY, REMOTE_CONCURRENCY = 2, 8


def _is_local(base_url: str | None) -> bool:
    from urllib.parse import urlparse

    host = (urlparse(base_url).hostname or "") if base_url else ""
    return host in ("localhost", "::1") or host.startswith("127.")


def default_concurrency(base_url: str | None = None) -> int:
    """``SAEDEX_LLM_CONCURRENCY``, else 2 for a server on this machine (llama.cpp, Ollama: more
    parallel requests only queue behind its slots and time out) and 8 for a remote endpoint."""
    s = settings()
    if s.llm_concurrency:
        return s.llm_concurrency
    return LOCAL_CONCURRENCY if _is_local(base_url if base_url is not None else s.llm_base_url) else REMOTE_CONCURRENCY


class LLMClient:
    """Chat calls hardened for the servers users point saedex at (OpenAI, vLLM, llama.cpp,
    Ollama): JSON answers constrained by a JSON schema via ``response_format`` where the server
    takes one (a server that refuses it is asked again without, once, and remembered), a
    timeout (``SAEDEX_LLM_TIMEOUT``, default 120 s), retries with back-off on transport errors,
    and unparseable answers counted and retried once with a reminder."""

    def __init__(self, model: str, max_retries: int = 4, timeout: float | None = None):
        from openai import OpenAI

        self.model = model
        self.max_retries = max_retries
        s = settings()
        self.timeout = float(timeout if timeout is not None else s.llm_timeout or DEFAULT_TIMEOUT_S)
        self.base_url = s.llm_base_url
        self.client = OpenAI(base_url=self.base_url, api_key=s.llm_api_key or "none",
                             timeout=self.timeout, max_retries=0)
        self.usage = Usage()
        self.schemas_supported = True

    def chat(self, system: str, user: str, max_tokens: int = 300, schema: dict | None = None) -> str:
        """One answer. Transport errors, 5xx, 408 and 429 are retried with back-off (a time-out once);
        another 4xx (a wrong key, an unknown model) is not: it fails the same way every time,
        and five retries of a 401 only delayed the error. The failure says only the endpoint's
        status (:func:`failure_reason`); the upstream body - which can echo a masked key or an
        internal address - goes to the log, never to a client or a job."""
        from openai import APIStatusError, APITimeoutError, BadRequestError

        delay = 0.5
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            kw = {}
            if schema is not None and self.schemas_supported:
                kw["response_format"] = {"type": "json_schema", "json_schema": {"name": "answer", "schema": schema, "strict": True}}
            try:
                resp = self.client.chat.completions.create(
                    model=self.model, temperature=0.0, max_tokens=max_tokens,
                    messages=[{"role": "system", "content": system}, {"role": "user", "content": user}], **kw)
                self.usage.add(getattr(resp, "usage", None))
                return resp.choices[0].message.content or ""
            except BadRequestError as e:  # e.g. a server without structured output: once without it
                if kw and ("response_format" in str(e).lower() or "json_schema" in str(e).lower()):
                    self.schemas_supported = False
                    continue
                last = e
                break  # a request the server refuses will not pass on a retry
            except APIStatusError as e:
                last = e
                if 400 <= e.status_code < 500 and e.status_code not in RETRIED_4XX:
                    break
            except APITimeoutError as e:  # a stalled endpoint stays stalled: one more try, not four
                if isinstance(last, APITimeoutError):
                    break
                last = e
            except Exception as e:  # noqa: BLE001 - transport errors: retried
                last = e
            if attempt < self.max_retries:
                time.sleep(delay)
                delay *= 2
        self.usage.failures += 1
        log.warning("LLM call to %s failed after %d attempt(s): %s", self.model, attempt + 1, last)
        raise LLMUnavailable(failure_reason(last))

    def chat_json(self, system: str, user: str, max_tokens: int = 300, schema: dict | None = None) -> Any:
        """A parsed JSON answer; an unparseable one is counted and asked for once more."""
        try:
            return parse_json(self.chat(system, user, max_tokens, schema))
        except ValueError:
            self.usage.unparseable += 1
        try:
            return parse_json(self.chat(system, user + "\n\nAnswer with one JSON object only, nothing else.", max_tokens, schema))
        except ValueError:
            self.usage.unparseable += 1
            raise

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], concurrency: int | None = None) -> list[Any]:
        """Apply ``fn`` concurrently (default: :func:`default_concurrency`); an item whose call
        failed yields its exception, not a crash."""
        def safe(it):
            try:
                return fn(it)
            except Exception as e:  # noqa: BLE001
                return e

        n = concurrency if concurrency is not None else default_concurrency(self.base_url)
        with ThreadPoolExecutor(max_workers=max(1, n)) as ex:
            return list(ex.map(safe, items))


def parse_json(text: str) -> Any:
    """Parse a JSON answer, tolerating code fences and prose around it."""
    t = text.strip()
    t = re.sub(r"^```(?:json)?\s*|\s*```$", "", t)
    try:
        return json.loads(t)
    except json.JSONDecodeError:
        m = re.search(r"(\{.*\}|\[.*\])", t, re.S)
        if m:
            return json.loads(m.group(1))
        raise ValueError(f"LLM answer is not JSON: {text[:200]!r}") from None

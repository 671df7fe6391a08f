"""Thin client for any OpenAI-compatible chat endpoint (OpenAI, vLLM, Ollama, llama.cpp server).

Configured by ``OPENAI_BASE_URL`` / ``OPENAI_API_KEY`` and a model name (``SAEDEX_LLM_MODEL`` or
an explicit argument). Adds what every LLM step in saedex needs: JSON answers, retries with
exponential back-off, bounded concurrency and token accounting.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable, Iterable


class LLMNotConfigured(RuntimeError):
    pass


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0
    calls: int = 0
    failures: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, u) -> None:
        with self._lock:
            self.calls += 1
            if u is not None:
                self.prompt_tokens += int(getattr(u, "prompt_tokens", 0) or 0)
                self.completion_tokens += int(getattr(u, "completion_tokens", 0) or 0)

    def as_dict(self) -> dict:
        return {"prompt_tokens": self.prompt_tokens, "completion_tokens": self.completion_tokens,
                "total_tokens": self.prompt_tokens + self.completion_tokens, "calls": self.calls, "failures": self.failures}


def llm_model(explicit: str | None = None) -> str | None:
    return explicit or os.environ.get("SAEDEX_LLM_MODEL")


def llm_available(model: str | None = None) -> bool:
    return bool(llm_model(model)) and bool(os.environ.get("OPENAI_BASE_URL") or os.environ.get("OPENAI_API_KEY"))


def require_llm(model: str | None, what: str) -> str:
    m = llm_model(model)
    if not llm_available(m):
        raise LLMNotConfigured(
            f"{what} needs an LLM: set OPENAI_BASE_URL (and OPENAI_API_KEY if the endpoint wants one) and a model "
            f"(--llm MODEL or SAEDEX_LLM_MODEL)"
        )
    return m  # type: ignore[return-value]


class LLMClient:
    def __init__(self, model: str, max_retries: int = 4, timeout: float = 60.0):
        from openai import OpenAI

        self.model = model
        self.max_retries = max_retries
        self.client = OpenAI(base_url=os.environ.get("OPENAI_BASE_URL"), api_key=os.environ.get("OPENAI_API_KEY", "none"),
                             timeout=timeout, max_retries=0)
        self.usage = Usage()

    def chat(self, system: str, user: str, max_tokens: int = 300) -> str:
        delay = 0.5
        last: Exception | None = None
        for attempt in range(self.max_retries + 1):
            try:
                resp = self.client.chat.completions.create(
                    model=self.model, temperature=0.0, max_tokens=max_tokens,
                    messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
                )
                self.usage.add(getattr(resp, "usage", None))
                return resp.choices[0].message.content or ""
            except Exception as e:  # noqa: BLE001 - openai raises many kinds; all are retried
                last = e
                if attempt < self.max_retries:
                    time.sleep(delay)
                    delay *= 2
        self.usage.failures += 1
        raise RuntimeError(f"LLM call failed after {self.max_retries + 1} attempts: {last}")

    def chat_json(self, system: str, user: str, max_tokens: int = 300) -> Any:
        return parse_json(self.chat(system, user, max_tokens))

    def map(self, fn: Callable[[Any], Any], items: Iterable[Any], concurrency: int = 8) -> list[Any]:
        """Apply ``fn`` concurrently; an item whose call failed yields its exception, not a crash."""
        def safe(it):
            try:
                return fn(it)
            except Exception as e:  # noqa: BLE001
                return e

        with ThreadPoolExecutor(max_workers=max(1, concurrency)) as ex:
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

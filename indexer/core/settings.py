"""Every environment variable saedex reads, in one typed object.

Read fresh on each call (a dozen ``os.environ`` lookups: cheap), so a test's ``monkeypatch.setenv``
or a user's export takes effect without restarts. Command-line flags and API fields override
these; nothing else in saedex reads the environment.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

from indexer.core.errors import InputError


@dataclass(frozen=True)
class Settings:
    home: Path  # SAEDEX_HOME: indexes, model copies, caches (default ~/.saedex)
    model_cache: Path | None  # SAEDEX_MODEL_CACHE: dense copies of GGUF readers (default HOME/models)
    precision: str  # SAEDEX_PRECISION: reader precision default (auto | fp32 | bf16)
    debug: bool  # SAEDEX_DEBUG=1: tracebacks for known errors too
    threads_pinned: bool  # OMP_NUM_THREADS set: the user chose torch's thread count
    wordnet_home: str | None  # WNHOME: a WordNet database folder
    llm_model: str | None  # SAEDEX_LLM_MODEL
    llm_base_url: str | None  # OPENAI_BASE_URL
    llm_api_key: str | None  # OPENAI_API_KEY
    llm_timeout: float | None  # SAEDEX_LLM_TIMEOUT (seconds)
    llm_concurrency: int | None  # SAEDEX_LLM_CONCURRENCY
    qdrant_url: str | None  # SAEDEX_QDRANT_URL: the server's Qdrant (default: embedded Qdrant Edge)
    qdrant_api_key: str | None  # SAEDEX_QDRANT_API_KEY: sent to that Qdrant (its QDRANT__SERVICE__API_KEY)
    api_keys: str | None  # SAEDEX_API_KEYS (set but empty is kept as "": refused, never read as "no auth")
    keys_file: str | None  # SAEDEX_KEYS_FILE
    audit_log: str | None  # SAEDEX_AUDIT_LOG
    rate_limit: float  # SAEDEX_RATE_LIMIT: API requests a second per key (default 20, bursts of 40; 0: no limit)
    api_docs: bool  # SAEDEX_API_DOCS=1: Swagger UI at /docs

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> "Settings":
        env = os.environ if env is None else env

        def text(name: str) -> str | None:
            return env.get(name) or None

        def number(name: str, kind):
            raw = text(name)
            if raw is None:
                return None
            try:
                value = kind(raw)
            except ValueError:
                raise InputError(f"{name}={raw!r} is not a {'whole number' if kind is int else 'number'}") from None
            if value <= 0:
                raise InputError(f"{name} must be positive (got {raw})")
            return value

        return cls(
            home=Path(env.get("SAEDEX_HOME") or Path.home() / ".saedex").expanduser(),
            model_cache=Path(env["SAEDEX_MODEL_CACHE"]).expanduser() if text("SAEDEX_MODEL_CACHE") else None,
            precision=env.get("SAEDEX_PRECISION") or "auto",
            debug=bool(text("SAEDEX_DEBUG")),
            threads_pinned="OMP_NUM_THREADS" in env,
            wordnet_home=text("WNHOME"),
            llm_model=text("SAEDEX_LLM_MODEL"),
            llm_base_url=text("OPENAI_BASE_URL"),
            llm_api_key=text("OPENAI_API_KEY"),
            llm_timeout=number("SAEDEX_LLM_TIMEOUT", float),
            llm_concurrency=number("SAEDEX_LLM_CONCURRENCY", int),
            qdrant_url=text("SAEDEX_QDRANT_URL"),
            qdrant_api_key=text("SAEDEX_QDRANT_API_KEY"),
            api_keys=env.get("SAEDEX_API_KEYS"),
            keys_file=text("SAEDEX_KEYS_FILE"),
            audit_log=text("SAEDEX_AUDIT_LOG"),
            rate_limit=_rate_limit(text("SAEDEX_RATE_LIMIT")),
            api_docs=env.get("SAEDEX_API_DOCS") == "1",
        )


DEFAULT_RATE_LIMIT = 20.0  # API requests a second per key (bursts of 40): below the capacity of a 2-core server (~75 searches/s), so one key cannot take it all; a page makes a few a second


def _rate_limit(raw: str | None) -> float:
    if raw is None:
        return DEFAULT_RATE_LIMIT
    try:
        value = float(raw)
    except ValueError:
        value = -1.0
    if not value >= 0:  # NaN too
        raise InputError(f"SAEDEX_RATE_LIMIT={raw!r} is not a number >= 0 (requests a second per key; 0: no limit)")
    return value


def settings() -> Settings:
    return Settings.from_env()

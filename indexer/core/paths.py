"""Where saedex keeps its state: ``$SAEDEX_HOME`` (default ``~/.saedex``)."""

from __future__ import annotations

import re
from pathlib import Path

from indexer.core.errors import InputError
from indexer.core.settings import settings

INDEX_NAME_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}\Z")  # \Z: "$" also matched before a trailing newline


def saedex_home() -> Path:
    home = settings().home
    home.mkdir(parents=True, exist_ok=True)
    return home


def validate_index_name(name: str) -> str:
    """Index names become directory names: refuse anything that could escape ``$SAEDEX_HOME``."""
    if not isinstance(name, str) or not INDEX_NAME_RE.match(name):
        raise InputError(f"invalid index name {name!r}: use 1-64 characters from [A-Za-z0-9_-]")
    return name


def index_dir(name: str) -> Path:
    return saedex_home() / "indexes" / validate_index_name(name)

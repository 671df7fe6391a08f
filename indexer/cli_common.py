"""Shared CLI plumbing: JSON/table output and one-line errors with exit codes.

Every command takes ``--json``. Errors the user can fix (bad input, unknown index, locked
store) print one line to stderr and exit 2; nothing prints a traceback unless SAEDEX_DEBUG=1.
"""

from __future__ import annotations

import functools
import json
import os
import sys
from typing import Any, Callable

import typer
from rich.console import Console

console = Console(stderr=False)
err_console = Console(stderr=True)

JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")
UrlOpt = typer.Option(None, "--qdrant-url", envvar="SAEDEX_QDRANT_URL", help="Qdrant server URL (default: embedded Qdrant Edge).")


class UserError(Exception):
    """An error caused by the user's input; reported as one line, exit code 2."""


def emit(obj: Any, as_json: bool, render: Callable[[Any], None] | None = None) -> None:
    if as_json or render is None:
        sys.stdout.write(json.dumps(obj, indent=None if as_json else 2, default=_default) + "\n")
    else:
        render(obj)


def _default(o: Any):
    import numpy as np

    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def friendly_errors(fn: Callable) -> Callable:
    """Turn known exceptions into one-line messages and exit codes."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        from indexer.corpus import CorpusError
        from indexer.manifest import ManifestMismatch
        from indexer.llm import LLMNotConfigured
        from indexer.store import IndexNotFound, StoreError

        try:
            return fn(*args, **kwargs)
        except (UserError, CorpusError, ManifestMismatch, ValueError, FileNotFoundError, LLMNotConfigured, IndexNotFound) as e:
            if os.environ.get("SAEDEX_DEBUG"):
                raise
            err_console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(2) from None
        except StoreError as e:
            if os.environ.get("SAEDEX_DEBUG"):
                raise
            err_console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(1) from None

    return wrapper

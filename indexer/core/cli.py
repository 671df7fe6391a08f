"""Shared CLI plumbing: JSON/table output and one-line errors with exit codes.

Every command takes ``--json``. Errors the user can fix (bad input, unknown index, locked
store) print one line to stderr and exit 2; nothing prints a traceback unless SAEDEX_DEBUG=1.
"""

from __future__ import annotations

import functools
import json
import sys
from typing import Any, Callable

import typer
from rich.console import Console

from indexer.core.errors import InputError, SaedexError
from indexer.core.settings import settings

console = Console(stderr=False)
err_console = Console(stderr=True)

JsonOpt = typer.Option(False, "--json", help="Print machine-readable JSON on stdout.")
UrlOpt = typer.Option(None, "--qdrant-url", envvar="SAEDEX_QDRANT_URL", help="Qdrant server URL (default: embedded Qdrant Edge).")


class UserError(InputError):
    """An error in what the user asked for, raised by the CLI itself (exit code 2)."""


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
    """The CLI's one mapping of errors: a :class:`indexer.core.errors.SaedexError` (or a missing file)
    is one line on stderr and its exit code; anything else is a bug and keeps its traceback,
    after a one-line hint (``SAEDEX_DEBUG=1`` shows tracebacks for the known errors too)."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        try:
            return fn(*args, **kwargs)
        except (SaedexError, FileNotFoundError) as e:
            if settings().debug:
                raise
            err_console.print(f"[red]error:[/red] {e}", highlight=False, soft_wrap=True)
            raise typer.Exit(getattr(e, "exit_code", 2)) from None
        except (typer.Exit, typer.Abort, KeyboardInterrupt, SystemExit):
            raise
        except Exception:
            err_console.print("[red]unexpected error[/red] (a bug in saedex, not in your input): the traceback follows; "
                              "please report it", highlight=False)
            raise

    return wrapper

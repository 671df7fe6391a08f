"""One base for every error a user can act on: a one-line message, a CLI exit code, an HTTP status.

Why: each layer had its own exception classes with no common base, and the CLI turned *any*
``ValueError`` into "exit 2, bad input", so a programming bug looked like a user's mistake. Now
the CLI (``indexer.core.cli.friendly_errors``) and the API (``server.app``) each map
:class:`SaedexError` in one place; anything else is a bug: a traceback in the CLI (with a
one-line hint) and an opaque 500 with a request id in the API.

The kinds are few on purpose: what the user should do differs between them.
"""

from __future__ import annotations


class SaedexError(Exception):
    """A user-facing error. Subclasses set ``exit_code`` (CLI) and ``http_status`` (API)."""

    exit_code = 2
    http_status = 422


class InputError(SaedexError, ValueError):
    """Bad input: a flag, a file, a record, a request field (exit 2, HTTP 422). A ValueError too,
    so code that validates with ``except ValueError`` keeps working."""


class NotFoundError(SaedexError):
    """No such index, document or latent (exit 2, HTTP 404)."""

    http_status = 404


class ConflictError(SaedexError, ValueError):
    """The request does not fit the index's state: another recipe, stale statistics, an index
    built by another saedex version (exit 2, HTTP 409)."""

    http_status = 409


class UnavailableError(SaedexError, RuntimeError):
    """Something saedex depends on is not available right now: the index is open in another
    process, a Qdrant server or an LLM endpoint does not answer (exit 1, HTTP 503)."""

    exit_code = 1
    http_status = 503

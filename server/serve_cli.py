"""`saedex serve`: the HTTP API and web page over every index in $SAEDEX_HOME (or a Qdrant URL)."""

from __future__ import annotations

import json
from typing import Optional

import typer

from indexer.core.cli import UrlOpt, err_console, friendly_errors
from indexer.core.errors import InputError
from indexer.core.paths import saedex_home
from indexer.core.settings import settings
from server.app import create_app
from server.auth import check_secret, digest, load_keys

LOOPBACK = ("127.0.0.1", "localhost", "::1")


@friendly_errors
def serve_cmd(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    qdrant_url: Optional[str] = UrlOpt,
    keys_file: Optional[str] = typer.Option(None, "--keys-file", envvar="SAEDEX_KEYS_FILE",
                                            help="JSON keys file: ids, sha256 digests, roles, indexes (see README)."),
    audit_log: Optional[str] = typer.Option(None, "--audit-log", envvar="SAEDEX_AUDIT_LOG",
                                            help="Append-only JSON-lines audit log of every /v1/ request "
                                                 "(default $SAEDEX_HOME/audit.jsonl; '' turns it off)."),
    docs: bool = typer.Option(False, "--docs", help="Serve Swagger UI at /docs (it loads assets from a CDN)."),
    analysis_workers: int = typer.Option(1, "--analysis-workers", min=1, max=16, help="Analysis jobs run at once."),
    log_level: str = typer.Option("info", "--log-level"),
):
    """Serve the API (/openapi.json) and the web page (/). Keys: SAEDEX_API_KEYS=k1,k2 and/or --keys-file."""
    import logging

    import uvicorn

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    keys = load_keys(settings().api_keys, keys_file)  # KeyConfigError (a ValueError): exit 2
    if not keys:
        if host not in LOOPBACK:
            raise InputError("refusing to serve on a non-loopback address without keys (SAEDEX_API_KEYS or --keys-file)")
        err_console.print("[yellow]warning:[/yellow] no API keys configured: the API is open on loopback")
    _single_thread_torch()
    if audit_log is None:
        audit_log = str(saedex_home() / "audit.jsonl")
    if audit_log:
        err_console.print(f"audit log: {audit_log}")
    app = create_app(qdrant_url, keys=keys, audit_log=audit_log or False, docs=docs, analysis_workers=analysis_workers)
    uvicorn.run(app, host=host, port=port, log_level=log_level, workers=1)


def _single_thread_torch() -> None:
    """Each search's MiniLM call and matrix product on one thread: the server's concurrency comes
    from its search pool (one search per core), not from torch's or OpenBLAS's threads fighting
    over the same cores (OpenBLAS's idle threads spin: a 16k x 384 product cost twice its wall
    time in CPU)."""
    import torch
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(1)
    threadpool_limits(1)


@friendly_errors
def key_digest_cmd(key: str = typer.Argument(..., help="The key a client will send (Bearer KEY)."),
                   as_json: bool = typer.Option(False, "--json", help="Print JSON.")):
    """Print the sha256 digest of a key, for a keys file ({"id": ..., "sha256": DIGEST}): the file then never reveals it."""
    hexdigest = digest(check_secret(key, "key")).hex()
    typer.echo(json.dumps({"sha256": hexdigest}) if as_json else hexdigest)


# The commands this layer adds to `saedex` (composed in server/cli.py), in the order `--help` lists them.
COMMANDS = {
    "serve": serve_cmd,
    "key-digest": key_digest_cmd,
}

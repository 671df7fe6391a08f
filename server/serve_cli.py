"""`saedex serve`: the HTTP API and web page over every index in $SAEDEX_HOME (or a Qdrant URL)."""

from __future__ import annotations

from typing import Optional

import typer

from indexer.cli_common import UrlOpt, err_console, friendly_errors


def register(app: typer.Typer) -> None:
    app.command("serve")(serve_cmd)


@friendly_errors
def serve_cmd(
    host: str = typer.Option("127.0.0.1", "--host"),
    port: int = typer.Option(8000, "--port"),
    qdrant_url: Optional[str] = UrlOpt,
    log_level: str = typer.Option("info", "--log-level"),
):
    """Serve the API (/docs, /openapi.json) and the web page (/). Keys: SAEDEX_API_KEYS=k1,k2."""
    import logging
    import os

    import uvicorn

    from server.app import create_app

    logging.basicConfig(level=log_level.upper(), format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not os.environ.get("SAEDEX_API_KEYS"):
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("refusing to serve on a non-loopback address without SAEDEX_API_KEYS")
        err_console.print("[yellow]warning:[/yellow] SAEDEX_API_KEYS is not set: the API is open on loopback")
    uvicorn.run(create_app(qdrant_url), host=host, port=port, log_level=log_level, workers=1)

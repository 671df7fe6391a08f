"""The one `saedex` command line, composed here at the top layer from each layer's ``COMMANDS``
table (name -> typer function). Imported explicitly, so a missing or misspelt module fails at
start-up instead of silently dropping its commands."""

from __future__ import annotations

import typer

import analyses.cli
import indexer.cli
import search.cli
import server.serve_cli

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="saedex: interpretable SAE embeddings for search and analysis of text collections.")

for _module in (indexer.cli, search.cli, analyses.cli, server.serve_cli):
    for _name, _command in _module.COMMANDS.items():
        app.command(_name)(_command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

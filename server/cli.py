"""The one `saedex` command line: every layer registers its own commands here."""

from __future__ import annotations

import importlib
import importlib.util

import typer

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="saedex: interpretable SAE embeddings for search and analysis of text collections.")

_COMMAND_MODULES = ("indexer.cli", "search.cli", "analyses.cli", "server.serve_cli")

for _name in _COMMAND_MODULES:
    if importlib.util.find_spec(_name) is not None:
        importlib.import_module(_name).register(app)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

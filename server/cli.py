"""The one `saedex` command line, composed here at the top layer from each layer's ``COMMANDS``
table (name -> typer function). Imported explicitly, so a missing or misspelt module fails at
start-up instead of silently dropping its commands."""

from __future__ import annotations

import sys

from indexer.core.quiet import quiet_third_parties, verbose_requested

quiet_third_parties(verbose_requested(sys.argv[1:]))  # before the command modules import transformers

import typer  # noqa: E402

import analyses.cli  # noqa: E402
import indexer.cli  # noqa: E402
import search.cli  # noqa: E402
import server.serve_cli  # noqa: E402

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="saedex: interpretable SAE embeddings for search and analysis of text collections.")


@app.callback()
def _options(verbose: bool = typer.Option(False, "--verbose", help="Show third-party progress bars and warnings "
                                                                   "(model loading); also SAEDEX_VERBOSE=1.")) -> None:
    """saedex: interpretable SAE embeddings for search and analysis of text collections."""

for _module in (indexer.cli, search.cli, analyses.cli, server.serve_cli):
    for _name, _command in _module.COMMANDS.items():
        app.command(_name)(_command)


def main() -> None:
    app()


if __name__ == "__main__":
    main()

"""A quiet command line: no third-party progress bars or advisory warnings unless asked for.

Every `saedex` command printed transformers' "Loading weights 0/103" bar and a ``loss_type=None``
warning while loading MiniLM: noise that says nothing about the user's data and buries what
saedex itself reports. The CLI calls :func:`quiet_third_parties` before anything imports those
libraries (their switches are read at import); ``saedex --verbose ...`` or SAEDEX_VERBOSE=1
keeps them. Library users are left alone: only the CLI calls this.
"""

from __future__ import annotations

import logging
import os
import sys

QUIET_ENV = {
    "TRANSFORMERS_VERBOSITY": "error",  # advisory warnings (loss_type=None, ...)
    "HF_HUB_DISABLE_PROGRESS_BARS": "1",  # transformers' and the hub's tqdm bars ("Loading weights")
    "TRANSFORMERS_NO_ADVISORY_WARNINGS": "1",
    "TOKENIZERS_PARALLELISM": "false",  # the fork warning of tokenizers
    "TQDM_DISABLE": "1",  # bars made with tqdm directly ("Converting and de-quantizing GGUF tensors"); saedex's own pass disable=False
}


def verbose_requested(argv: list[str]) -> bool:
    return "--verbose" in argv[:1] or os.environ.get("SAEDEX_VERBOSE", "") not in ("", "0")


def quiet_third_parties(verbose: bool = False) -> None:
    if verbose:
        return
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    for name in ("transformers", "sentence_transformers", "huggingface_hub", "accelerate"):
        logging.getLogger(name).setLevel(logging.ERROR)
    if "transformers" in sys.modules:  # imported already: its switches were read, so flip them
        from transformers.utils import logging as tf_logging

        tf_logging.set_verbosity_error()
        tf_logging.disable_progress_bar()

"""Cooperative progress and cancellation for long library calls (analyses run as server jobs).

A job runs a library function inside :func:`reporting`; the function's loops call
:func:`checkpoint` (one shard, one block of pairs) which reports how far it got and raises
:class:`Cancelled` once the job was cancelled. Outside a job, ``checkpoint`` costs one
context-variable lookup and does nothing, so the CLI and library callers are unaffected.
"""

from __future__ import annotations

from contextlib import contextmanager
from contextvars import ContextVar
from typing import Callable, Iterator

# called as report(fraction or None); returns True when the work should stop
_reporter: ContextVar[Callable[[float | None], bool] | None] = ContextVar("saedex_progress", default=None)


class Cancelled(Exception):
    """The job running this work was cancelled."""


def checkpoint(done: float | None = None, total: float | None = None) -> None:
    report = _reporter.get()
    if report is None:
        return
    fraction = None if done is None or not total else max(0.0, min(1.0, float(done) / float(total)))
    if report(fraction):
        raise Cancelled()


@contextmanager
def reporting(report: Callable[[float | None], bool]) -> Iterator[None]:
    token = _reporter.set(report)
    try:
        yield
    finally:
        _reporter.reset(token)


class _NoBar:
    def update(self, n: int) -> None: ...
    def close(self) -> None: ...
    def set_postfix(self, **kw) -> None: ...


def progress_bar(total: int, desc: str, enabled: bool, unit: str = "doc"):
    """A progress bar on stderr for a long CLI phase (ingest, import), or a silent stand-in."""
    if not enabled or total == 0:
        return _NoBar()
    import sys

    from tqdm import tqdm

    # disable=False explicitly: the CLI sets TQDM_DISABLE to silence third-party bars, not ours
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, mininterval=1.0, disable=False)

"""Analyses as jobs: accepted at once, run on their own bounded executor, polled, cancellable.

Why: a diff, NPMI or clustering over a large index runs for seconds to minutes. Run inline in a
request they hold a connection and a worker thread each, and enough of them starve every other
request (a long diff plus 45 queued analyses once blocked ``/healthz`` for 32.6 s). Here they
run on ``workers`` threads of their own (default 1: an analysis is memory-heavy and the 2-core
machine keeps a core for searches), with at most ``per_index`` jobs queued or running per
index - past that, :class:`QueueFull` (HTTP 429 with ``Retry-After``). Cancellation is
cooperative: the analyses call :func:`indexer.core.progress.checkpoint` per shard / block, which also
reports progress. Finished jobs are kept for ``keep_s`` seconds (at most ``keep`` of them).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Callable

from indexer.core.progress import Cancelled, reporting

log = logging.getLogger("saedex.jobs")
KINDS = ("diff", "correlations", "clusters")


ANALYSIS_NICENESS = 10


def _background_priority() -> None:
    """Lower this worker thread's CPU priority (Linux: a thread id is a schedulable entity): an
    analysis is background work, and at equal priority it competed with the search threads and
    the event loop for the same two cores."""
    import os

    try:
        tid = threading.get_native_id()
        current = os.getpriority(os.PRIO_PROCESS, tid)
        if current < ANALYSIS_NICENESS:
            os.setpriority(os.PRIO_PROCESS, tid, ANALYSIS_NICENESS)
    except (AttributeError, OSError):  # not Linux, or not permitted: run at normal priority
        pass


def scrub(value: Any, depth: int = 0) -> Any:
    """A value safe to serialise whatever it holds: strings that are not valid Unicode get
    replacement characters. A job keeps what it was given and what it made, and one bad string
    once made every later ``GET /v1/jobs`` of its key a 500."""
    if isinstance(value, str):
        return value.encode("utf-8", "replace").decode("utf-8")
    if depth > 32:
        return None
    if isinstance(value, dict):
        return {scrub(str(k)): scrub(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [scrub(v, depth + 1) for v in value]
    return value


class QueueFull(Exception):
    def __init__(self, index: str, limit: int, retry_after: int, owner: str | None = None):
        whose = f"key {owner!r} on index {index!r}" if owner is not None else f"index {index!r}"
        super().__init__(f"{whose} already has {limit} analysis jobs queued or running; retry later")
        self.retry_after = retry_after


@dataclass
class Job:
    id: str
    index: str
    kind: str
    owner: str
    params: dict
    status: str = "queued"  # queued | running | done | failed | cancelled
    progress: float | None = None
    created: float = field(default_factory=time.time)
    started: float | None = None
    finished: float | None = None
    result: Any = None
    error: dict | None = None  # {"status": HTTP status, "detail": message}
    cancel_requested: bool = False
    done_event: threading.Event = field(default_factory=threading.Event, repr=False)

    @property
    def active(self) -> bool:
        return self.status in ("queued", "running")

    def view(self, with_result: bool = True) -> dict:
        out = {"id": self.id, "index": self.index, "kind": self.kind, "status": self.status,
               "progress": None if self.progress is None else round(self.progress, 3), "params": self.params,
               "created": round(self.created, 3), "started": self.started and round(self.started, 3),
               "finished": self.finished and round(self.finished, 3)}
        if self.error is not None:
            out["error"] = self.error
        if with_result and self.status == "done":
            out["result"] = self.result
        return out


class JobManager:
    def __init__(self, workers: int = 1, per_index: int = 8, keep: int = 500, keep_s: float = 3600.0,
                 error_of: Callable[[BaseException], dict | None] | None = None, per_key: int | None = None):
        self.per_index = per_index
        # one key may hold at most half an index's queue, so it cannot make every other key get 429
        self.per_key = per_key if per_key is not None else max(1, per_index // 2)
        self.keep, self.keep_s = keep, keep_s
        self.error_of = error_of or (lambda e: None)
        self.workers = workers
        self._pool: ThreadPoolExecutor | None = None  # made on first use, so a restarted app (lifespan) gets a new one
        self._jobs: dict[str, Job] = {}
        self._lock = threading.Lock()
        self._durations: list[float] = []

    def submit(self, index: str, kind: str, owner: str, params: dict, fn: Callable[[], Any]) -> Job:
        with self._lock:
            self._prune()
            active = sum(1 for j in self._jobs.values() if j.index == index and j.active)
            if active >= self.per_index:
                raise QueueFull(index, self.per_index, self._retry_after(active))
            mine = sum(1 for j in self._jobs.values() if j.owner == owner and j.index == index and j.active)
            if mine >= self.per_key:
                raise QueueFull(index, self.per_key, self._retry_after(mine), owner=owner)
            job = Job(uuid.uuid4().hex, index, kind, owner, scrub(params))
            self._jobs[job.id] = job
            if self._pool is None:
                self._pool = ThreadPoolExecutor(max_workers=self.workers, thread_name_prefix="saedex-analysis")
            pool = self._pool
        pool.submit(self._run, job, fn)
        return job

    def get(self, job_id: str) -> Job | None:
        with self._lock:
            return self._jobs.get(job_id)

    def list(self, owner: str | None = None) -> list[Job]:
        with self._lock:
            jobs = [j for j in self._jobs.values() if owner is None or j.owner == owner]
        return sorted(jobs, key=lambda j: -j.created)

    def cancel(self, job: Job) -> Job:
        with self._lock:
            if job.status == "queued":
                self._finish(job, "cancelled")
            elif job.status == "running":
                job.cancel_requested = True  # the next checkpoint raises Cancelled
        return job

    def cancel_index(self, index: str) -> None:
        """Cancel every job of an index (it was dropped or replaced under the server)."""
        for j in self.list():
            if j.index == index and j.active:
                self.cancel(j)

    def wait(self, job: Job, timeout: float) -> Job:
        job.done_event.wait(max(0.0, timeout))
        return job

    def shutdown(self) -> None:
        """Cancel every job and wait for the running one to stop (at its next checkpoint)."""
        for j in self.list():
            if j.active:
                self.cancel(j)
        with self._lock:
            pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    # ----------------------------------------------------------------- internals
    def _run(self, job: Job, fn: Callable[[], Any]) -> None:
        _background_priority()
        with self._lock:
            if job.status != "queued":
                return  # cancelled while queued
            job.status, job.started = "running", time.time()

        def report(fraction: float | None) -> bool:
            if fraction is not None:
                job.progress = fraction
            return job.cancel_requested

        try:
            with reporting(report):
                result = fn()
        except Cancelled:
            with self._lock:
                self._finish(job, "cancelled")
            return
        except Exception as e:  # noqa: BLE001 - a job's failure is its result, never the worker's
            err = self.error_of(e)
            if err is None:
                log.exception("job %s (%s on %s) failed", job.id, job.kind, job.index)
                err = {"status": 500, "detail": "internal error", "request_id": job.id[:12]}
            with self._lock:
                job.error = scrub(err)
                self._finish(job, "failed")
            return
        with self._lock:
            job.result, job.progress = result, 1.0
            self._finish(job, "done")

    def _finish(self, job: Job, status: str) -> None:
        job.status, job.finished = status, time.time()
        if job.started is not None:
            self._durations = (self._durations + [job.finished - job.started])[-20:]
        job.done_event.set()

    def _retry_after(self, active: int) -> int:
        typical = sorted(self._durations)[len(self._durations) // 2] if self._durations else 5.0
        return max(1, min(600, int(typical * max(1, active - self.per_index + 1) + 0.999)))

    def _prune(self) -> None:
        now = time.time()
        done = [j for j in self._jobs.values() if not j.active]
        for j in done:
            if now - (j.finished or now) > self.keep_s:
                del self._jobs[j.id]
        done = sorted((j for j in self._jobs.values() if not j.active), key=lambda j: j.finished or 0)
        for j in done[: max(0, len(done) - self.keep)]:
            del self._jobs[j.id]

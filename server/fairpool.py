"""A thread pool that serves API keys in turn.

Why: searches run on a bounded pool (one thread per core). With a first-in-first-out queue, a key
that keeps many requests in flight takes the pool in proportion to its requests: an abuse run with
twelve attacking connections against eight honest ones tripled the honest p99. Here each key has
its own queue and the workers take the next request from the keys in round-robin order, so under
contention every key gets an equal share of the workers whatever it sends, and a key alone gets
all of them.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from concurrent.futures import Future
from typing import Any, Callable


class FairPool:
    def __init__(self, workers: int, name: str = "saedex-fair"):
        self._queues: OrderedDict[str, deque] = OrderedDict()
        self._cond = threading.Condition()
        self._closed = False
        self._threads = [threading.Thread(target=self._work, name=f"{name}-{n}", daemon=True) for n in range(workers)]
        for t in self._threads:
            t.start()

    def submit(self, key: str, fn: Callable[..., Any], *args: Any) -> Future:
        fut: Future = Future()
        with self._cond:
            if self._closed:
                raise RuntimeError("pool is shut down")
            self._queues.setdefault(key, deque()).append((fut, fn, args))
            self._cond.notify()
        return fut

    def queued(self, key: str) -> int:
        with self._cond:
            return len(self._queues.get(key, ()))

    def _next(self):
        """The oldest request of the key whose turn it is (that key then goes to the back)."""
        with self._cond:
            while not self._queues and not self._closed:
                self._cond.wait()
            if not self._queues:
                return None
            key, q = next(iter(self._queues.items()))
            item = q.popleft()
            del self._queues[key]
            if q:
                self._queues[key] = q  # to the back of the round
            return item

    def _work(self) -> None:
        while True:
            item = self._next()
            if item is None:
                return
            fut, fn, args = item
            if not fut.set_running_or_notify_cancel():
                continue
            try:
                fut.set_result(fn(*args))
            except BaseException as e:  # noqa: BLE001 - the caller's to handle
                fut.set_exception(e)

    def shutdown(self) -> None:
        with self._cond:
            self._closed = True
            for q in self._queues.values():
                for fut, _, _ in q:
                    fut.cancel()
            self._queues.clear()
            self._cond.notify_all()
        for t in self._threads:
            t.join(5)

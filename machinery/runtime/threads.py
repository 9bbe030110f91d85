"""The threads a tree walk runs its parallel branches and map items on.

`each(work, count, width)` calls `work(0) ... work(count - 1)`, at most `width` at once, and returns
their results in order. The calling thread takes its share of the work, and the other threads come
from a pool the whole process shares: a thread that has nothing to do waits up to IDLE_S for more,
then ends. So an event does not start threads of its own, and a thread keeps its kept-alive
connections to the services (machinery.runtime.transport) from one event to the next. Items are
handed out by a shared counter, one at a time as each thread is free: there is no future or queue
entry per item.
"""

from __future__ import annotations

import itertools
import os
import threading
from typing import Any, Callable

IDLE_S = 60.0

_lock = threading.Lock()
_idle: list[_Runner] = []
_names = itertools.count(1)


class _Runner:
    """One pooled thread: runs the job it is handed, then waits, idle, for the next."""

    def __init__(self, job: Callable[[], None]):
        self.job: Callable[[], None] | None = job
        self.handed = threading.Lock()
        self.handed.acquire()  # released when a job is handed to it while it waits
        self.thread = threading.Thread(target=self._loop, name=f"machinery-tree-{next(_names)}", daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while True:
            job, self.job = self.job, None
            try:
                job()
            except BaseException:  # noqa: S110 - a job reports its own errors (each() does)
                pass
            del job
            with _lock:
                _idle.append(self)
            if not self.handed.acquire(timeout=IDLE_S):
                with _lock:
                    if self in _idle:  # still idle: end
                        _idle.remove(self)
                        return
                self.handed.acquire()  # taken from the pool just now: its job is being handed over

    def hand(self, job: Callable[[], None]) -> None:
        self.job = job
        self.handed.release()


def start(job: Callable[[], None]) -> None:
    """Run `job` on a pooled thread, an idle one if there is one."""
    with _lock:
        runner = _idle.pop() if _idle else None
    if runner is None:
        _Runner(job)
    else:
        runner.hand(job)


def each(work: Callable[[int], Any], count: int, width: int) -> list[Any]:
    """[work(0), ..., work(count - 1)], at most `width` running at once: the calling thread and up to
    width - 1 pooled ones each take the next index until none is left. The first exception raised
    is raised here, once every thread has stopped taking indices; an index no one took when a work
    raised keeps None in the results."""
    results: list[Any] = [None] * count
    width = max(1, min(width, count))
    taken = itertools.count()  # next() is atomic: each index goes to one thread
    errors: list[BaseException] = []
    left = [width]
    finished = threading.Event()
    counting = threading.Lock()

    def share() -> None:
        try:
            for index in taken:
                if index >= count or errors:
                    break
                results[index] = work(index)
        except BaseException as error:
            errors.append(error)
        finally:
            with counting:
                left[0] -= 1
                last = left[0] == 0
            if last:
                finished.set()

    for _ in range(width - 1):
        try:
            start(share)
        except RuntimeError:  # no thread can be started now: the threads there are share the work
            with counting:
                left[0] -= 1
    share()
    finished.wait()
    if errors:
        raise errors[0]
    return results


def _forget() -> None:
    """A forked child has none of its parent's threads: its pool starts empty."""
    global _lock
    _lock = threading.Lock()
    _idle.clear()


os.register_at_fork(after_in_child=_forget)

"""The threads tree walks share: results in order, the width kept, errors raised, threads reused."""

from __future__ import annotations

import threading
import time

import pytest

from machinery.runtime import threads


def test_each_returns_the_results_in_order_and_keeps_to_its_width():
    running, most, lock = [0], [0], threading.Lock()

    def work(index):
        with lock:
            running[0] += 1
            most[0] = max(most[0], running[0])
        time.sleep(0.002 if index % 3 else 0.01)  # later items end first
        with lock:
            running[0] -= 1
        return index * 10

    assert threads.each(work, 60, 4) == [index * 10 for index in range(60)]
    assert 1 <= most[0] <= 4  # that they do run at once: the next test


def test_the_calling_thread_takes_its_share_and_the_pool_is_reused():
    seen: list[int] = []
    barrier = threading.Barrier(3, timeout=5)  # the three run at once, or the barrier breaks

    def work(_index):
        barrier.wait()
        seen.append(threading.get_ident())
        return None

    threads.each(work, 3, 3)
    first = set(seen)
    assert threading.get_ident() in first and len(first) == 3
    barrier.reset()
    seen.clear()
    threads.each(work, 3, 3)
    assert set(seen) == first  # the same pooled threads, idle in between


def test_the_first_error_is_raised_once_every_thread_has_stopped():
    started, lock = [], threading.Lock()

    def work(index):
        with lock:
            started.append(index)
        if index == 5:
            raise ValueError("item 5")
        time.sleep(0.005)
        return index

    with pytest.raises(ValueError, match="item 5"):
        threads.each(work, 500, 4)
    count = len(started)
    time.sleep(0.05)
    assert len(started) == count < 500  # nothing started after it was raised, and the rest never did


def test_an_idle_thread_ends_after_its_idle_time(monkeypatch):
    monkeypatch.setattr(threads, "IDLE_S", 0.05)
    width = len(threads._idle) + 2
    together = threading.Barrier(width, timeout=5)  # so every idle thread takes one, then waits 0.05 s
    threads.each(lambda index: together.wait(), width, width)
    deadline = time.monotonic() + 5
    while threads._idle and time.monotonic() < deadline:
        time.sleep(0.01)
    assert threads._idle == []
    assert threads.each(lambda index: index + 1, 3, 3) == [1, 2, 3]  # new threads start as needed

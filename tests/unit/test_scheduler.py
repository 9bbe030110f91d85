"""How often a process looks for due schedules: at most every LOOK_S, at once again after a look that
found one, and spaced by ten times a fruitless look's cost when the store is slow to answer."""

from __future__ import annotations

import time

from machinery.runtime.scheduler import LOOK_S, LOOK_SHARE, Scheduler


class CountingStore:
    """A store with no due schedule, whose looks take `look_s` and are counted."""

    def __init__(self, look_s: float = 0.0):
        self.look_s = look_s
        self.looks = 0

    def claim_schedule(self, owner, lease_s):
        self.looks += 1
        time.sleep(self.look_s)
        return None


def test_a_process_looks_at_most_once_per_look_interval():
    store = CountingStore()
    scheduler = Scheduler(store, {"LEASE_S": 30})
    for _ in range(50):
        assert scheduler.look("a") is False
    assert store.looks == 1
    scheduler._next_look = time.monotonic() - 0.001  # the interval is over
    assert scheduler.look("a") is False and store.looks == 2


def test_a_slow_fruitless_look_spaces_the_next_by_ten_times_its_cost():
    store = CountingStore(look_s=0.05)
    scheduler = Scheduler(store, {"LEASE_S": 30})
    started = time.monotonic()
    scheduler.look("a")
    assert scheduler._next_look - started >= LOOK_SHARE * 0.05 > LOOK_S


def test_a_look_that_finds_a_due_schedule_lets_the_next_look_come_at_once(monkeypatch):
    class OneDue(CountingStore):
        def claim_schedule(self, owner, lease_s):
            self.looks += 1
            return {"name": "s"} if self.looks == 1 else None

    store = OneDue()
    scheduler = Scheduler(store, {"LEASE_S": 30})
    monkeypatch.setattr(scheduler, "fire", lambda schedule, owner: True)
    assert scheduler.look("a") is True
    assert scheduler.look("a") is False and store.looks == 2

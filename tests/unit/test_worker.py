"""The worker loop's choices, against a store that records what it is asked."""

from __future__ import annotations

import time

from machinery.config import load_config
from machinery.runtime.worker import LeaseKeeper, Worker


class SlowEmptyStore:
    """A store with nothing to claim, whose scans take `scan_s` and whose claims by id are counted."""

    def __init__(self, scan_s: float = 0.0):
        self.scan_s = scan_s
        self.scans = 0
        self.claimed_ids = []

    def claim_event(self, owner, lease_s, event_id=None):
        if event_id is not None:
            self.claimed_ids.append(event_id)
            return None
        self.scans += 1
        time.sleep(self.scan_s)
        return None

    def claim_webhook(self, owner, lease_s):
        return None

    def claim_schedule(self, owner, lease_s):
        return None

    def sweep_values(self):
        self.sweeps = getattr(self, "sweeps", 0) + 1
        return 0


def worker(store, max_idle_s):
    config = load_config({"MONGO_URI": "mongomock://localhost/unused"})
    return Worker(store, executor=None, keeper=LeaseKeeper(store, 30), config=config, threads=1,
                  max_idle_s=max_idle_s)


def test_a_told_worker_claims_the_event_it_was_told_of_by_id_and_does_not_rescan_at_once():
    store = SlowEmptyStore()
    told = worker(store, max_idle_s=1.0)
    assert told.work_once("me", 30) is False and store.scans == 1
    told.wake("6b08b8b8c0a1e7920e84c1fb")
    assert told.work_once("me", 30) is False
    assert store.claimed_ids == ["6b08b8b8c0a1e7920e84c1fb"] and store.scans == 1


def test_a_wake_without_an_event_asks_for_a_scan():
    store = SlowEmptyStore()
    told = worker(store, max_idle_s=1.0)
    told.work_once("me", 30)
    told.wake()
    told.work_once("me", 30)
    assert store.scans == 2


def test_a_worker_not_told_of_work_scans_every_time():
    store = SlowEmptyStore()
    polling = worker(store, max_idle_s=None)
    for _ in range(3):
        polling.work_once("me", 30)
    assert store.scans == 3


def test_slow_scans_are_spaced_in_proportion_to_their_cost():
    # GIVEN a store whose scan takes 0.2 s WHEN an embedded worker finds nothing
    store = SlowEmptyStore(scan_s=0.2)
    told = worker(store, max_idle_s=1.0)
    told.work_once("me", 30)
    # THEN past its usual second it still does not scan again: the next scan waits ten times the cost
    time.sleep(1.2)
    assert told.work_once("me", 30) is False and store.scans == 1
    # AND a quick store is scanned again after the second
    quick = SlowEmptyStore()
    other = worker(quick, max_idle_s=1.0)
    other.work_once("me", 30)
    time.sleep(1.05)
    other.work_once("me", 30)
    assert quick.scans == 2

"""Schedules: what a worker's look for a due tick costs on the embedded store, by the number of schedules
stored, and how often a process then looks (at most every 0.2 s, and at least ten times a fruitless
look's cost apart), so what share of its time looking takes. On MongoDB a look is one walk of the
schedules_due index whatever the number (the real-MongoDB suite checks its plan); the embedded store
(mongomock) has no indexes and reads every schedule."""

from __future__ import annotations

import time
from datetime import timedelta

from machinery.runtime.scheduler import LOOK_S, LOOK_SHARE
from machinery.store import Store, utcnow

COUNTS = (10, 100, 1000, 10000)
LOOKS = 20


def _fill(store: Store, count: int) -> None:
    now = utcnow()
    store.schedules.insert_many([
        {"name": f"s{n}", "workflow": "w", "data": {}, "every_s": 3600, "paused": n % 10 == 0,
         "next_run": now + timedelta(hours=1, minutes=n), "lease_owner": None, "lease_expires": now, "ticks": []}
        for n in range(count)])


def look_ms(store: Store) -> float:
    """The median cost of a look that finds nothing due, in ms."""
    costs = []
    for _ in range(LOOKS):
        started = time.perf_counter()
        assert store.claim_schedule("bench", 30) is None
        costs.append(time.perf_counter() - started)
    return sorted(costs)[len(costs) // 2] * 1000


def run() -> None:
    print(f"{'schedules':>10} {'look ms':>9} {'looks/s':>8} {'busy %':>7}")
    for count in COUNTS:
        store = Store.connect(f"mongomock://localhost/bench-schedules-{count}")
        store.ensure_indexes()
        _fill(store, count)
        cost_ms = look_ms(store)
        interval_s = max(LOOK_S, LOOK_SHARE * cost_ms / 1000)
        print(f"{count:>10} {cost_ms:>9.3f} {1 / interval_s:>8.1f} {cost_ms / 1000 / interval_s * 100:>7.1f}",
              flush=True)

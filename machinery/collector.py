"""The garbage collector's settings for a long-running Machinery process (an API worker, `machinery worker`).

CPython's cycle collector runs a young collection after every 700 container objects allocated and
not yet freed, and an older one after every 10 of those. An event allocates thousands of dicts and
lists (its request, its record, the replies it reads), and nearly all of them are freed by reference
counting the moment the event ends; what the collector walks, again and again, are the objects that
live: the app, its modules and, on the embedded store, every stored document. Measured in process
on a 3-step event with 2,000 events stored, the collector took 113 µs of the event's 1.6 ms of CPU
with the defaults, and 12-20 µs with the thresholds below; under gunicorn, over 3,000 events, the
API's CPU an event went from 2.58 to 2.50 ms (`benchmarks/RESULTS.md`).

tune() raises the thresholds (it never lowers one a deployment set higher) and freezes what the
process holds once it is set up (gc.freeze: the objects alive now, the app and its imports, are left
out of every later collection). Cycles are still collected; they wait a little longer. Call it once
the process has loaded its app, in the process that serves: gunicorn's worker after its app is
loaded (machinery.gunicorn_conf), `machinery worker` before its threads start. Not in create_app:
tests and embedders make many apps in one process, and a frozen object that later becomes garbage
is never collected.
"""

from __future__ import annotations

import gc

THRESHOLDS = (20_000, 20, 20)  # young objects before a collection; young, then middle collections before the next


def tune() -> tuple[int, int, int]:
    """Raise the collector's thresholds to THRESHOLDS and freeze what the process holds; the thresholds set."""
    chosen = tuple(max(now, wanted) for now, wanted in zip(gc.get_threshold(), THRESHOLDS, strict=True))
    gc.set_threshold(*chosen)
    gc.collect()  # what start-up left as garbage goes now, not into the frozen generation
    gc.freeze()
    return chosen

"""Dashboard: GET /ui/ at 1e3, 1e4 and 1e5 stored events, with a day of rollups for 5 workflows.

The page reads the rollups (288 five-minute buckets per workflow and day) and counts active events
by status, never the events themselves, so its time should not grow with the events stored.
Target: under 200 ms at 1e5 events, on the embedded store, through the Flask test client.

Knobs: BENCH_DASHBOARD_SIZES (1000,10000,100000), BENCH_DASHBOARD_VIEWS (20).
"""

from __future__ import annotations

import os
import random
import statistics
import time
from datetime import UTC, datetime, timedelta

from bson import ObjectId

from benchmarks import common
from machinery import rollups
from machinery.app import create_app

SIZES = tuple(int(size) for size in os.environ.get("BENCH_DASHBOARD_SIZES", "1000,10000,100000").split(","))
VIEWS = int(os.environ.get("BENCH_DASHBOARD_VIEWS", "20"))
WORKFLOWS = 5
STEPS = 4
TARGET_MS = 200.0


def _fill(runtime, events: int) -> None:
    store = runtime.store
    rng = random.Random(events)
    now = datetime.now(UTC).replace(tzinfo=None)
    batch = []
    for index in range(events):
        ack = now - timedelta(seconds=rng.uniform(0, 86_400))
        status = "completed" if index % 50 else rng.choice(["pending", "running", "waiting", "failed"])
        batch.append({"_id": ObjectId(), "workflow_id": f"w{index % WORKFLOWS}",
                      "workflow_name": f"wf-{index % WORKFLOWS}", "status": status, "ack_date": ack,
                      "updated_at": ack, "context": {"message": "x" * 40}, "lease_expires": ack})
        if len(batch) == 5000:
            store.events.insert_many(batch)
            batch = []
    if batch:
        store.events.insert_many(batch)
    recorder = runtime.rollups
    # A day of traffic: every bucket of every workflow gets events and step runs.
    for bucket in range(288):
        when = (now - timedelta(seconds=bucket * rollups.BUCKET_S)).replace(tzinfo=UTC)
        for workflow in range(WORKFLOWS):
            for _ in range(3):
                recorder.event_finished(f"wf-{workflow}", rng.choice(["completed"] * 9 + ["failed"]),
                                        rng.lognormvariate(4, 1), when=when)
            for step in range(STEPS):
                recorder.step_finished(f"wf-{workflow}", f"s{step}", f"svc{step}", "completed",
                                       rng.lognormvariate(3, 1), when=when)
    recorder.flush()


def _views(client) -> list[float]:
    timings = []
    for _ in range(VIEWS):
        started = time.perf_counter()
        response = client.get("/ui/")
        timings.append((time.perf_counter() - started) * 1000)
        assert response.status_code == 200, response.status_code
    return timings


def run() -> dict:
    rows, results = [], {}
    for size in SIZES:
        app = create_app({"MONGO_URI": f"mongomock://localhost/bench-dashboard-{size}-{os.getpid()}",
                          "EMBEDDED_WORKERS": 0})
        runtime = app.extensions["machinery"]
        _fill(runtime, size)
        client = app.test_client()
        client.get("/ui/")  # templates compiled, indexes made
        timings = _views(client)
        median = statistics.median(timings)
        p95 = statistics.quantiles(timings, n=20)[-1]
        results[size] = {"median_ms": median, "p95_ms": p95}
        rows.append([f"{size:,}", median, p95, "yes" if median < TARGET_MS else "NO"])
        runtime.close(grace_s=1)
    common.table(f"Dashboard page (GET /ui/, {WORKFLOWS} workflows, a day of rollups, {VIEWS} views)",
                 ["stored events", "median ms", "p95 ms", f"< {TARGET_MS:.0f} ms"], rows)
    common.save("dashboard", {"results": results})
    return results


if __name__ == "__main__":
    run()

"""Scale: per-event cost as a chain grows from 1 to 50 steps, and the event endpoints as stored events
grow from 1e3 to 1e5 (filled straight through the Store; timed through the API in process)."""

from __future__ import annotations

import contextlib
import os
import random
import time

import requests
from bson import ObjectId

from benchmarks import common

STEPS = (1, 5, 10, 25, 50)
SIZES = tuple(int(size) for size in os.environ.get("BENCH_SCALE_SIZES", "1000,10000,100000").split(","))
MESSAGE = {"message": "hello world"}
REPEATS = 20
OP_TIME_LIMIT_S = 20.0


def per_step() -> tuple[list, dict]:
    rows, results = [], {}
    with contextlib.ExitStack() as stack:
        echo = common.start_echo(stack)
        api, _ = common.start_machinery(stack, name="machinery-scale-steps")
        session = requests.Session()
        for steps in STEPS:
            workflow = common.http_register(api, echo, steps)
            urls = common.chain_urls(echo, steps)
            samples = max(30, 150 // steps)
            direct = common.summary(common.sequential(lambda urls=urls: common.direct_chain(session, urls),
                                                      samples=samples, warmup=3))
            ours = common.summary(common.sequential(
                lambda url=f"{api}/e/{workflow}": common.post_ok(session, url, MESSAGE), samples=samples, warmup=3))
            extra = (ours["median_ms"] - direct["median_ms"]) / steps
            results[steps] = {"direct": direct, "machinery": ours, "overhead_per_step_ms": round(extra, 3)}
            rows.append([steps, direct["median_ms"], ours["median_ms"], ours["p99_ms"],
                         round(ours["median_ms"] / steps, 3), round(extra, 3)])
    return rows, results


def _timed(call, repeats: int = REPEATS) -> dict:
    latencies = []
    deadline = time.monotonic() + OP_TIME_LIMIT_S
    for _ in range(repeats):
        started = time.perf_counter()
        call()
        latencies.append(time.perf_counter() - started)
        if time.monotonic() > deadline:
            break
    return common.summary(latencies)


def stored_events() -> tuple[list, dict]:
    """Fill the embedded store with copies of a real completed event, then time the endpoints."""
    rows, results = [], {}
    with contextlib.ExitStack() as stack:
        echo = common.start_echo(stack)
        app = common.in_process(stack, "bench-scale")
        client = app.test_client()
        store = app.extensions["machinery"].store
        workflow = common.register(lambda path, body: client.post(path, json=body), echo, 3)
        template = store.get_event(client.post(f"/e/{workflow}", json=MESSAGE).get_json()["event_id"])
        template.pop("event_id")
        ids = []
        count = 1
        rng = random.Random(7)
        for size in SIZES:
            fill_started = time.perf_counter()
            while count < size:
                event, _ = store.insert_event({**template, "_id": ObjectId()})
                ids.append(event["event_id"])
                count += 1
            fill_s = time.perf_counter() - fill_started
            timings = {
                "GET /events/<id>": _timed(lambda: client.get(f"/events/{rng.choice(ids)}")),
                "GET /events (newest 20)": _timed(lambda: client.get("/events?page_size=20")),
                "GET /events?workflow&status": _timed(
                    lambda: client.get(f"/events?workflow={workflow}&status=completed&page_size=20")),
                "POST /e/<workflow> (sync, 3 steps)": _timed(lambda: client.post(f"/e/{workflow}", json=MESSAGE)),
                "worker claim, nothing pending": _timed(lambda: store.claim_event("bench", 30.0)),
            }
            count = store.events.count_documents({})
            results[size] = {"stored": count, "fill_s": round(fill_s, 1), **timings}
            for operation, timing in timings.items():
                rows.append([f"{size:,}", operation, timing["median_ms"], timing["p99_ms"]])
    return rows, results


def run() -> dict:
    rows, steps = per_step()
    text = common.table("Per-event cost as the chain grows (sync, 1 client, ms)",
                        ["steps", "direct median", "Machinery median", "Machinery p99", "Machinery per step",
                         "overhead per step vs direct"], rows)
    rows, sizes = stored_events()
    text += "\n" + common.table("Event endpoints as stored events grow (embedded store, in process, ms)",
                                ["stored events", "operation", "median", "p99"], rows)
    common.save("scale", {"steps": steps, "stored_events": sizes, "table": text})
    return {"steps": steps, "stored_events": sizes}


if __name__ == "__main__":
    run()

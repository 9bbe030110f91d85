"""Throughput: events/s and p99 of the 3-step chain at 1, 8 and 32 concurrent clients, sync and async,
against the same calls made directly and through the bare relay (embedded store)."""

from __future__ import annotations

import contextlib
import os
import time
from datetime import datetime

import requests

from benchmarks import common

CLIENTS = (1, 8, 32)
STEPS = 3
EVENTS = int(os.environ.get("BENCH_THROUGHPUT_EVENTS", "600"))
MESSAGE = {"message": "hello world"}


def _session() -> requests.Session:
    session = requests.Session()
    session.mount("http://", requests.adapters.HTTPAdapter(pool_connections=4, pool_maxsize=4))
    return session


def _when(value: str) -> datetime:
    return datetime.fromisoformat(value)


def run_async(api: str, workflow: str, clients: int, events: int) -> dict:
    """Post `events` events with ?mode=async from `clients` threads, then poll the event list until
    all are completed; events/s counts from the first post to the last completion."""
    before = requests.get(f"{api}/events", params={"workflow": workflow, "status": "completed", "page_size": 1},
                          timeout=30).json()["total"]
    ids: list[str] = []

    def make_call():
        session = _session()

        def call():
            ids.append(common.post_ok(session, f"{api}/e/{workflow}?mode=async", MESSAGE, expect=202)["event_id"])
        return call

    started = time.perf_counter()
    posted_rate, _, errors = common.concurrent(make_call, clients, events, warmup=0)
    deadline = time.monotonic() + common.TIME_LIMIT_S + 60
    done = before
    while time.monotonic() < deadline:
        done = requests.get(f"{api}/events", params={"workflow": workflow, "status": "completed", "page_size": 1},
                            timeout=30).json()["total"]
        if done - before >= len(ids):
            break
        time.sleep(0.05)
    elapsed = time.perf_counter() - started
    # Each event's latency from acceptance to completion, from its own record.
    latencies = []
    session = _session()
    for event_id in ids[:: max(1, len(ids) // 200)]:
        record = session.get(f"{api}/events/{event_id}", timeout=30).json()
        if record.get("finished_at"):
            latencies.append((_when(record["finished_at"]) - _when(record["ack_date"])).total_seconds())
    return {"events_per_s": round((done - before) / elapsed, 1), "accepted_per_s": round(posted_rate, 1),
            "completed": done - before, "posted": len(ids), "errors": errors, **common.summary(latencies)}


def run() -> dict:
    results: dict = {}
    rows = []
    with contextlib.ExitStack() as stack:
        echo = common.start_echo(stack)
        relay = common.start_relay(stack, {f"chain-{STEPS}": common.chain_urls(echo, STEPS)})
        urls = common.chain_urls(echo, STEPS)
        lean = common.start_relay(stack, {f"chain-{STEPS}": urls}, client="lean")
        systems = {"direct": common.chainer(urls),
                   "relay": common.poster(f"{relay}/e/chain-{STEPS}", MESSAGE),
                   "relay-lean": common.poster(f"{lean}/e/chain-{STEPS}", MESSAGE)}
        for clients in CLIENTS:
            for name, make_call in systems.items():
                rate, latencies, errors = common.concurrent(make_call, clients, EVENTS)
                results[f"{name}/{clients}"] = {"events_per_s": round(rate, 1), "errors": errors,
                                                **common.summary(latencies)}
            # A fresh Machinery for each mode and client count: each starts from an empty embedded store.
            with contextlib.ExitStack() as inner:
                api, _ = common.start_machinery(inner, name=f"machinery-sync-{clients}")
                workflow = common.http_register(api, echo, STEPS)
                rate, latencies, errors = common.concurrent(common.poster(f"{api}/e/{workflow}", MESSAGE),
                                                            clients, EVENTS)
                results[f"machinery-sync/{clients}"] = {"events_per_s": round(rate, 1), "errors": errors,
                                                        **common.summary(latencies)}
            with contextlib.ExitStack() as inner:
                api, _ = common.start_machinery(inner, name=f"machinery-async-{clients}")
                workflow = common.http_register(api, echo, STEPS)
                results[f"machinery-async/{clients}"] = run_async(api, workflow, clients, EVENTS)
    for clients in CLIENTS:
        relay_rate = results[f"relay/{clients}"]["events_per_s"]
        for name in ("direct", "relay", "relay-lean", "machinery-sync", "machinery-async"):
            entry = results[f"{name}/{clients}"]
            entry["ratio_vs_relay"] = common.ratio(entry["events_per_s"], relay_rate)
            rows.append([clients, name, entry["events_per_s"], entry["median_ms"], entry["p99_ms"],
                         entry["ratio_vs_relay"], entry["errors"]])
    text = common.table(
        f"Throughput, 3-step chain, {EVENTS} events per cell (async: accepted → completed in the store)",
        ["clients", "system", "events/s", "median ms", "p99 ms", "events/s ÷ relay", "errors"], rows)
    common.save("throughput", {"events": EVENTS, "results": results, "table": text})
    return results


if __name__ == "__main__":
    run()

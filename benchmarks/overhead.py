"""Overhead: 1-, 3- and 10-step chains of a trivial service, sync through Machinery, against the
same calls made directly with one session and against a bare relay storing nothing (calling with requests,
and with Machinery's own client). The four take turns event by event, so that a drift in the machine's load
falls on every column alike: measured one block after another, the ratio to the lean relay moved by a
tenth between two runs of the same code."""

from __future__ import annotations

import contextlib

import requests

from benchmarks import common

STEPS = (1, 3, 10)
MESSAGE = {"message": "hello world"}


def store_writes_per_event(echo_url: str, steps_list=STEPS, events: int = 50) -> dict[int, float]:
    """Store writes per sync event, counted on `store.writes` of an in-process Machinery.

    Same code path as under gunicorn (the Flask app, the embedded store, real HTTP calls to the
    same services); only the front server differs, and it makes no store write. The count is not
    exposed over HTTP: the product has no debug endpoint for it.
    """
    counts = {}
    with contextlib.ExitStack() as stack:
        app = common.in_process(stack, "bench-writes")
        client = app.test_client()
        store = app.extensions["machinery"].store

        def post(path, body):
            reply = client.post(path, json=body)
            assert reply.status_code in (200, 201), reply.get_json()

        for steps in steps_list:
            name = common.register(post, echo_url, steps)
            client.post(f"/e/{name}", json=MESSAGE)
            before = store.writes
            for _ in range(events):
                reply = client.post(f"/e/{name}", json=MESSAGE)
                assert reply.status_code == 201, reply.get_json()
            counts[steps] = (store.writes - before) / events
    return counts


def run() -> dict:
    rows, results = [], {}
    with contextlib.ExitStack() as stack:
        echo = common.start_echo(stack)
        chains = {f"chain-{n}": common.chain_urls(echo, n) for n in STEPS}
        relay = common.start_relay(stack, chains)
        lean_relay = common.start_relay(stack, chains, client="lean")
        session = requests.Session()
        for steps in STEPS:
            # A fresh Machinery per chain, so each measurement starts from an empty embedded store.
            with contextlib.ExitStack() as inner:
                api, _ = common.start_machinery(inner, name=f"machinery-overhead-{steps}")
                workflow = common.http_register(api, echo, steps)
                urls = common.chain_urls(echo, steps)
                # The four take turns event by event: the ratios compare events made in the same moments.
                seconds = common.interleaved({
                    "direct": lambda urls=urls: common.direct_chain(session, urls),
                    "relay": lambda steps=steps: common.post_ok(session, f"{relay}/e/chain-{steps}", MESSAGE),
                    "relay_lean": lambda steps=steps: common.post_ok(session, f"{lean_relay}/e/chain-{steps}", MESSAGE),
                    "machinery": lambda url=f"{api}/e/{workflow}": common.post_ok(session, url, MESSAGE),
                }, common.SAMPLES, warmup=20)
            results[steps] = {name: common.summary(values) for name, values in seconds.items()}
        writes = store_writes_per_event(echo)
    for steps in STEPS:
        entry = results[steps]
        entry["store_writes_per_event"] = writes[steps]
        entry["write_budget"] = steps + 2
        entry["ratio_vs_relay"] = common.ratio(entry["machinery"]["median_ms"], entry["relay"]["median_ms"])
        entry["p99_ratio_vs_relay"] = common.ratio(entry["machinery"]["p99_ms"], entry["relay"]["p99_ms"])
        entry["ratio_vs_lean_relay"] = common.ratio(entry["machinery"]["median_ms"],
                                                    entry["relay_lean"]["median_ms"])
        rows.append([steps, entry["direct"]["median_ms"], entry["direct"]["p99_ms"],
                     entry["relay"]["median_ms"], entry["relay"]["p99_ms"], entry["relay_lean"]["median_ms"],
                     entry["machinery"]["median_ms"], entry["machinery"]["p99_ms"],
                     entry["ratio_vs_relay"], entry["p99_ratio_vs_relay"], entry["ratio_vs_lean_relay"],
                     f"{writes[steps]:g} (≤ {steps + 2})"])
    text = common.table(
        f"Sync overhead, 1 client, {common.SAMPLES} events each (ms)",
        ["steps", "direct median", "direct p99", "relay median", "relay p99", "lean relay median",
         "Machinery median", "Machinery p99", "median ÷ relay", "p99 ÷ relay", "median ÷ lean relay",
         "store writes/event"], rows)
    common.save("overhead", {"samples": common.SAMPLES, "results": results, "table": text})
    return results


if __name__ == "__main__":
    run()

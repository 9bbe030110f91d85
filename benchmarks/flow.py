"""Flow control: what the limiter costs a call on the embedded store, and a 1,000-event burst against a
service limited to max_concurrency 4 with a fixed latency (the most in flight, measured at the service,
and the throughput against 0.9 x 4 / latency)."""

from __future__ import annotations

import contextlib
import statistics
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from benchmarks import common
from machinery.runtime import flow
from machinery.store import Store

CALLS = 5000
TARGET_MS = 0.2
BURST = 1000
LIMIT = 4
LATENCIES_S = (0.02, 0.05)
TEXT = [{"name": "message", "type": "string"}]
SETTINGS = {
    "none": {},
    "max_concurrency": {"max_concurrency": 4},
    "rate_limit": {"rate_limit": {"per_s": 1e5, "burst": 100000}},
    "breaker": {"breaker": {"failure_threshold": 5, "cool_down_s": 30}},
    "all three": {"max_concurrency": 4, "rate_limit": {"per_s": 1e5, "burst": 100000},
                  "breaker": {"failure_threshold": 5, "cool_down_s": 30}},
}


def limiter_cost(calls: int = CALLS) -> dict[str, float]:
    """Microseconds flow control adds to one call (admit and release; the call itself does nothing), by
    setting, on a fresh embedded store: the least of five runs, and their median. On a machine shared
    with other work the least is what the limiter itself costs; the median adds what the others took."""
    costs = {}
    for name, settings in SETTINGS.items():
        store = Store.connect(f"mongomock://localhost/bench-flow-{name.replace(' ', '-')}")
        gate = flow.Flow(store, {"LEASE_S": 30.0})
        limits = flow.limits_of({"name": "upper", **settings})
        runs = []
        for _ in range(5):
            started = time.perf_counter()
            for _ in range(calls):
                if limits is None:
                    _call()
                else:
                    gate.through(limits, _call)
            runs.append((time.perf_counter() - started) / calls * 1e6)
        costs[name] = (min(runs), statistics.median(runs))
    least, middle = costs["none"]
    return {name: (max(0.0, low - least), max(0.0, mid - middle)) for name, (low, mid) in costs.items()}


def _call() -> None:
    return None


def start_watched(stack: contextlib.ExitStack, latency_s: float) -> str:
    """The `watched` service under gunicorn (1 worker, 16 threads), answering after `latency_s`."""
    port = common.free_port()
    process = common.Process(f"watched-{int(latency_s * 1000)}",
                             common.gunicorn("benchmarks.apps:watched", port, common.SERVICE_THREADS),
                             env={"BENCH_SLEEP_MS": str(latency_s * 1000), "PYTHONPATH": str(common.REPO)})
    stack.callback(process.stop)
    url = f"http://{common.LOCAL}:{port}"
    common.wait_http(f"{url}/stats", process)
    return url


def burst(latency_s: float, events: int = BURST, limit: int = LIMIT) -> dict:
    """Send `events` async events at once to a one-step workflow over a service taking `latency_s`, limited
    to `limit` in flight; Machinery under gunicorn, its embedded store and 8 embedded worker threads. The
    throughput is the service's: calls from its first call's arrival to its last reply."""
    with contextlib.ExitStack() as stack:
        service = start_watched(stack, latency_s)
        api, _ = common.start_machinery(stack, name=f"machinery-flow-{int(latency_s * 1000)}",
                                        env={"MACHINERY_EMBEDDED_WORKERS": "8", "MACHINERY_LOG_LEVEL": "warning",
                                             "MACHINERY_ACCESS_LOG": "false"})
        session = requests.Session()
        assert session.post(f"{api}/services", json={"name": "upper", "address": f"{service}/call", "inputs": TEXT,
                                                     "outputs": TEXT, "max_concurrency": limit},
                            timeout=30).status_code == 201
        assert session.post(f"{api}/workflows", json={"name": "via-upper", "services": ["upper"], "inputs": TEXT,
                                                      "outputs": TEXT}, timeout=30).status_code == 201
        local = threading.local()

        def send(number: int) -> str:
            if not hasattr(local, "session"):
                local.session = requests.Session()
            reply = local.session.post(f"{api}/e/via-upper?mode=async", json={"message": f"m{number}"}, timeout=60)
            assert reply.status_code == 202, reply.text
            return reply.json()["event_id"]
        with ThreadPoolExecutor(4) as pool:
            list(pool.map(send, range(events)))
        sent = time.monotonic()
        deadline = sent + 600
        while True:
            stats = session.get(f"{service}/stats", timeout=10).json()
            if stats["calls"] >= events and not stats["in_flight"]:
                break
            if time.monotonic() > deadline:
                raise AssertionError(f"only {stats['calls']} of {events} calls within 600 s")
            time.sleep(0.05)
    span = stats["last_end"] - stats["first"]
    throughput = stats["calls"] / span
    target = 0.9 * limit / latency_s
    return {"latency_ms": latency_s * 1000, "events": events, "calls": stats["calls"],
            "max_in_flight": stats["max_in_flight"], "seconds": round(span, 2),
            "sending_s": round(sent - stats["first"], 2), "per_s": round(throughput, 1),
            "target_per_s": round(target, 1), "ratio": common.ratio(throughput, target)}


def run() -> dict:
    costs = limiter_cost()
    cost_text = common.table(
        f"Flow control's cost per call on the embedded store ({CALLS} calls, 5 runs; target ≤ "
        f"{TARGET_MS * 1000:.0f} µs)", ["setting", "µs per call (least)", "÷ target", "µs per call (median)"],
        [[name, round(low, 1), common.ratio(low, TARGET_MS * 1000) or 0.0, round(mid, 1)]
         for name, (low, mid) in costs.items()])
    bursts = [burst(latency) for latency in LATENCIES_S]
    burst_text = common.table(
        f"A burst of {BURST} async events against a service at max_concurrency {LIMIT}",
        ["latency ms", "calls", "most in flight", "seconds", "of which sending", "calls/s", "0.9 × 4 / latency",
         "÷ target"],
        [[entry["latency_ms"], entry["calls"], entry["max_in_flight"], entry["seconds"], entry["sending_s"],
          entry["per_s"],
          entry["target_per_s"], entry["ratio"]] for entry in bursts])
    results = {"cost_us": costs, "bursts": bursts}
    common.save("flow", {**results, "table": cost_text + "\n" + burst_text})
    return results


if __name__ == "__main__":
    run()

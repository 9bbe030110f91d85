"""Versions: the version 1 three-step chain and the REST-style GET, through Machinery from other
checkouts side by side with this one and the lean relay, in one run, samples interleaved.

BENCH_VERSIONS="label=/path/to/checkout,label2=/path" names the other checkouts; each has its own
.venv with Machinery installed, and is served by its own gunicorn command (its `machinery.cli.
gunicorn_command`, asked of its own python), so a different module layout starts as it shipped.
This checkout is "now". A sample is one event of each system, in an order that rotates each round,
so load on the shared machine falls on all of them alike. CPU per event is the gunicorn worker's
user + system time (/proc/<pid>/stat) over the measured events, the idle work of its threads included.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import requests

from benchmarks import common
from benchmarks.memory import worker_pid

STEPS = 3
MESSAGE = {"message": "hello world"}
ORDER = {"order_id": "A/7 é", "tenant": "acme"}
TOKEN = "bench-token-0123456789"
NOW = "now"
TICK_S = 1 / os.sysconf("SC_CLK_TCK")


def checkouts(spec: str | None = None) -> dict[str, Path]:
    """{label: checkout}, this one first as "now", then BENCH_VERSIONS's in their order."""
    found = {NOW: common.REPO}
    for part in filter(None, (spec if spec is not None else os.environ.get("BENCH_VERSIONS", "")).split(",")):
        label, _, where = part.partition("=")
        path = Path(where.strip()).expanduser()
        if not label.strip() or not where.strip():
            raise ValueError(f"BENCH_VERSIONS: {part!r} is not label=/path")
        if not (path / ".venv" / "bin" / "python").exists():
            raise ValueError(f"BENCH_VERSIONS: {path} has no .venv/bin/python (run make install there)")
        found[label.strip()] = path
    return found


def cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process so far (fields 14 and 15 of /proc/<pid>/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * TICK_S


def python_of(checkout: Path) -> str:
    return sys.executable if checkout == common.REPO else str(checkout / ".venv" / "bin" / "python")


def serve_command(checkout: Path, bind: str) -> list[str]:
    """The checkout's own gunicorn command for one worker of API_THREADS threads, asked of its python."""
    asked = subprocess.run(
        [python_of(checkout), "-c", "import json, sys; from machinery.cli import gunicorn_command; "
         "print(json.dumps(gunicorn_command(sys.argv[1], 1, int(sys.argv[2]))))", bind, str(common.API_THREADS)],
        cwd=checkout, capture_output=True, text=True, timeout=60,
        env={key: value for key, value in os.environ.items() if key != "PYTHONPATH"})
    if asked.returncode != 0:
        raise RuntimeError(f"{checkout}: gunicorn_command failed: {asked.stderr.strip()[-500:]}")
    return json.loads(asked.stdout.strip().splitlines()[-1])


def start(stack: contextlib.ExitStack, label: str, checkout: Path) -> tuple[str, common.Process]:
    port = common.free_port()
    bind = f"{common.LOCAL}:{port}"
    env = {"MACHINERY_MONGO_URI": "mongomock://localhost/bench", "PYTHONPATH": ""}
    process = common.Process(f"machinery-version-{label}", serve_command(checkout, bind), env=env, cwd=checkout)
    stack.callback(process.stop)
    url = f"http://{bind}"
    common.wait_http(f"{url}/healthcheck", process)
    return url, process


def register_get(api: str, rest_url: str) -> str | None:
    """The REST-style GET workflow (as in hotpath.calls_cpu); None when this version cannot say it."""
    session = requests.Session()
    if session.put(f"{api}/secrets/bench_token", json={"value": TOKEN}, timeout=10).status_code not in (200, 201):
        return None
    inputs = [{"name": "order_id", "type": "string"}, {"name": "tenant", "type": "string"}]
    total = {"name": "total", "type": "float"}
    service = {"name": "get", "address": rest_url, "inputs": inputs, "outputs": [{**total, "from": "body.order.total"}],
               "request": {"method": "GET", "path": "/orders/{order_id}",
                           "headers": {"Authorization": "Bearer {secret.bench_token}", "X-Tenant": "{tenant}"}}}
    if session.post(f"{api}/services", json=service, timeout=10).status_code != 201:
        return None
    reply = session.post(f"{api}/workflows", json={"name": "get", "services": ["get"], "inputs": inputs,
                                                   "outputs": [total]}, timeout=10)
    return "get" if reply.status_code == 201 else None


def p95(latencies: list[float]) -> float | None:
    values = sorted(latencies)
    return round(values[min(len(values) - 1, math.ceil(0.95 * len(values)) - 1)] * 1000, 3) if values else None


def interleaved(systems: dict[str, tuple[str, dict, int]], samples: int, warmup: int = 20) -> dict[str, dict]:
    """`samples` rounds, each one POST to every system (url, body, pid), the order rotating each round;
    bounded by TIME_LIMIT_S. Returns each system's latencies and CPU per event in ms."""
    sessions = {name: requests.Session() for name in systems}

    def send(name: str) -> None:
        url, body, _ = systems[name]
        common.post_ok(sessions[name], url, body)

    for _ in range(warmup):
        for name in systems:
            send(name)
    names = list(systems)
    latencies: dict[str, list[float]] = {name: [] for name in names}
    cpu_before = {name: cpu_s(pid) for name, (_, _, pid) in systems.items()}
    deadline = time.monotonic() + common.TIME_LIMIT_S
    rounds = 0
    while rounds < samples and time.monotonic() < deadline:
        shift = rounds % len(names)
        for name in names[shift:] + names[:shift]:
            started = time.perf_counter()
            send(name)
            latencies[name].append(time.perf_counter() - started)
        rounds += 1
    return {name: {**common.summary(values), "p95_ms": p95(values),
                   "cpu_ms_per_event": round((cpu_s(systems[name][2]) - cpu_before[name]) / max(1, rounds) * 1000, 3)}
            for name, values in latencies.items()}


def run() -> dict:
    versions = checkouts()
    results: dict = {"versions": {label: str(path) for label, path in versions.items()}, "paths": {}}
    with contextlib.ExitStack() as stack:
        port = common.free_port()
        rest = common.Process("rest-versions", common.gunicorn("benchmarks.apps:rest", port, common.SERVICE_THREADS))
        stack.callback(rest.stop)
        rest_url = f"http://{common.LOCAL}:{port}"
        common.wait_for_post(f"{rest_url}/s0", rest)
        chain = f"chain-{STEPS}"
        relay_url, relay = common.relay_process(stack, {chain: common.chain_urls(rest_url, STEPS),
                                                        "get": {"get": rest_url, "token": TOKEN}}, client="lean")
        relay_pid = worker_pid(relay.pid)
        chains = {"relay-lean": (f"{relay_url}/e/{chain}", MESSAGE, relay_pid)}
        gets = {"relay-lean": (f"{relay_url}/e/get", ORDER, relay_pid)}
        for label, checkout in versions.items():
            api, process = start(stack, label, checkout)
            pid = worker_pid(process.pid)
            workflow = common.http_register(api, rest_url, STEPS)
            chains[label] = (f"{api}/e/{workflow}", MESSAGE, pid)
            get = register_get(api, rest_url)
            if get:
                gets[label] = (f"{api}/e/{get}", ORDER, pid)
            else:
                print(f"version {label}: no REST-style services (request, secrets): GET row left out", flush=True)
        results["paths"]["chain-3 POST"] = interleaved(chains, common.SAMPLES)
        results["paths"]["REST GET"] = interleaved(gets, common.SAMPLES)
    rows = []
    others = [label for label in versions if label != NOW]
    for path, measured in results["paths"].items():
        base = measured["relay-lean"]["median_ms"]
        for name, entry in measured.items():
            entry["ratio_vs_lean_relay"] = common.ratio(entry["median_ms"], base)
            changes = []
            for other in others:
                older = measured.get(other)
                change = None
                if name not in ("relay-lean", other) and older and older["median_ms"] and entry["median_ms"]:
                    change = round((entry["median_ms"] / older["median_ms"] - 1) * 100, 1)
                entry[f"change_vs_{other}_pct"] = change
                changes.append(f"{change:+.1f} %" if change is not None else None)
            rows.append([path, name, entry["median_ms"], entry["p95_ms"], entry["ratio_vs_lean_relay"],
                         entry["cpu_ms_per_event"], *changes])
    described = ", ".join(f"{label} = {path}" for label, path in versions.items())
    text = common.table(
        f"Versions side by side, 1 client, {common.SAMPLES} interleaved rounds ({described})",
        ["path", "system", "median ms", "p95 ms", "median ÷ lean relay", "API CPU ms/event",
         *(f"median vs {other}" for other in others)], rows)
    common.save("versions", {"samples": common.SAMPLES, **results, "table": text})
    return results


if __name__ == "__main__":
    run()

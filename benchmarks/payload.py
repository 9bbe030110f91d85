"""Large payloads: a three-step chain passing a 10 MB string, through Machinery (its values kept as
files, MACHINERY_OFFLOAD_BYTES) and through the bare relay storing nothing; the API's peak RSS under
4 concurrent 10 MB events; and the small-payload chain with offloading on and off, in the same run
(and, with BENCH_PAYLOAD_BASE=<git revision>, as Machinery ran it at that revision).

Goals (issue 15): the 10 MB chain's median at most 1.5 x the relay's; the peak RSS at most 300 MB;
small events unchanged (within 5 %).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import requests

from benchmarks import common
from machinery.cli import gunicorn_command

MIB = 1024 * 1024
LARGE = {"message": "x" * (10 * MIB)}
SMALL = {"message": "hello world"}
LARGE_SAMPLES, SMALL_SAMPLES = 15, 400
CONCURRENT = 4
RATIO_GOAL, RSS_GOAL_MB, SMALL_GOAL = 1.5, 300.0, 1.05
BASE = os.environ.get("BENCH_PAYLOAD_BASE")  # a git revision to compare small events with
INLINE = str(1 << 40)  # an offload threshold no value reaches: every value kept in the event


def peak_rss_mb(pid: int) -> float:
    """The process's peak resident set (VmHWM), in MB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmHWM for process {pid}")


def worker_pid(master: int) -> int:
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    if len(children) != 1:
        raise RuntimeError(f"expected one gunicorn worker under {master}, found {children}")
    return int(children[0])


def timed(session: requests.Session, url: str, body: dict, samples: int, warmup: int) -> dict:
    def call():
        reply = session.post(url, json=body, timeout=120)
        if reply.status_code != 201 or len(reply.content) < len(body["message"]):
            raise RuntimeError(f"POST {url}: {reply.status_code} {reply.text[:300]}")
    return common.summary(common.sequential(call, samples=samples, warmup=warmup))


def machinery_at(stack: contextlib.ExitStack, revision: str) -> str:
    """Machinery as it was at a git revision (its `machinery` package, from `git archive`), under the
    same gunicorn settings: what the small chain is compared with, in the same run."""
    tree = Path(tempfile.mkdtemp(prefix="machinery-base-"))
    stack.callback(shutil.rmtree, tree, True)
    archive = subprocess.run(["git", "archive", revision, "machinery"], cwd=common.REPO, capture_output=True,
                             check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(tree)], input=archive, check=True)
    port = common.free_port()
    process = common.Process(f"machinery-{revision[:12]}", gunicorn_command(f"{common.LOCAL}:{port}", 1,
                                                                            common.API_THREADS),
                             env={"MACHINERY_MONGO_URI": "mongomock://localhost/bench", "PYTHONPATH": str(tree)},
                             cwd=tree)
    stack.callback(process.stop)
    url = f"http://{common.LOCAL}:{port}"
    common.wait_http(f"{url}/healthcheck", process)
    return url


def chain_run(echo: str) -> dict:
    """The 10 MB chain and the small chain: Machinery with offloading, with every value inline, the
    relay; and Machinery at BENCH_PAYLOAD_BASE (a git revision from before offloading), when it is set."""
    results = {}
    with contextlib.ExitStack() as stack:
        api, _ = common.start_machinery(stack, name="machinery-payload")
        inline_api, _ = common.start_machinery(stack, name="machinery-inline",
                                               env={"MACHINERY_OFFLOAD_BYTES": INLINE})
        smalls = [("offload", api), ("inline", inline_api)]
        if BASE:
            smalls.append(("base", machinery_at(stack, BASE)))
        for _, where in smalls:
            name = common.http_register(where, echo, 3)
        relay = common.start_relay(stack, {name: common.chain_urls(echo, 3)})
        session = requests.Session()
        results["large_relay"] = timed(session, f"{relay}/e/{name}", LARGE, LARGE_SAMPLES, 2)
        results["large_machinery"] = timed(session, f"{api}/e/{name}", LARGE, LARGE_SAMPLES, 2)
        # Small events, interleaved in rounds so that both see the same machine.
        small: dict[str, list] = {kind: [] for kind, _ in smalls}
        for _ in range(4):
            for kind, where in smalls:
                figures = timed(session, f"{where}/e/{name}", SMALL, SMALL_SAMPLES // 4, 20)
                small[kind].append(figures["median_ms"])
        for kind in small:
            results[f"small_{kind}_ms"] = round(statistics.median(small[kind]), 3)
    return results


def wire_store(stack: contextlib.ExitStack) -> str:
    """The tests' MongoDB wire server (over mongomock) in its own process: the store outside the API, as
    MongoDB is in a deployment."""
    port = common.free_port()
    process = common.Process("store", [sys.executable, "-m", "tests.support.mongowire", str(port)])
    stack.callback(process.stop)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection((common.LOCAL, port), timeout=1):
            return f"mongodb://{common.LOCAL}:{port}/bench"
        time.sleep(0.1)
    raise RuntimeError(f"the wire store did not listen:\n{process.tail()}")


def rss_run(echo: str, store: str) -> dict:
    """A fresh API process, 4 clients sending a 10 MB event at once; the store embedded in the API
    (holding the files in its memory) or in its own process."""
    with contextlib.ExitStack() as stack:
        env = {} if store == "embedded" else {"MACHINERY_MONGO_URI": wire_store(stack)}
        api, process = common.start_machinery(stack, name=f"machinery-rss-{store}", env=env)
        name = common.http_register(api, echo, 3)
        worker = worker_pid(process.pid)
        common.post_ok(requests.Session(), f"{api}/e/{name}", SMALL)
        before = peak_rss_mb(worker)
        errors: list[str] = []
        ready = threading.Barrier(CONCURRENT)

        def client():
            session = requests.Session()
            ready.wait()
            reply = session.post(f"{api}/e/{name}", json=LARGE, timeout=300)
            if reply.status_code != 201 or reply.json()["outputs"]["message"] != LARGE["message"]:
                errors.append(f"{reply.status_code} {reply.text[:200]}")

        threads = [threading.Thread(target=client, daemon=True) for _ in range(CONCURRENT)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(300)
        peak = peak_rss_mb(worker)
    return {"store": store, "idle_peak_mb": round(before, 1), "peak_mb": round(peak, 1), "errors": len(errors)}


def run() -> dict:
    with contextlib.ExitStack() as stack:
        echo = common.start_echo(stack, name="echo-payload")
        result = {**chain_run(echo), "rss": [rss_run(echo, store) for store in ("embedded", "separate")]}
    large, relay = result["large_machinery"]["median_ms"], result["large_relay"]["median_ms"]
    result["large_ratio"] = common.ratio(large, relay)
    result["small_ratio"] = common.ratio(result["small_offload_ms"], result["small_inline_ms"])
    if BASE:
        result["small_base_ratio"] = common.ratio(result["small_offload_ms"], result["small_base_ms"])
    rows = [
        ["3-step chain, 10 MB string: bare relay", relay, result["large_relay"]["p99_ms"], ""],
        ["3-step chain, 10 MB string: Machinery", large, result["large_machinery"]["p99_ms"],
         f"{result['large_ratio']} x relay (goal <= {RATIO_GOAL})"],
        ["3-step chain, 11 bytes: every value inline", result["small_inline_ms"], "", ""],
        ["3-step chain, 11 bytes: offloading on", result["small_offload_ms"], "",
         f"{result['small_ratio']} x inline (goal <= {SMALL_GOAL})"],
    ]
    if BASE:
        rows.insert(2, [f"3-step chain, 11 bytes: Machinery at {BASE} (before offloading)", result["small_base_ms"],
                        "", ""])
        rows[-1][3] += f"; {result['small_base_ratio']} x {BASE}"
    text = common.table("Large payloads (sync, sequential; embedded store, 1 gunicorn worker x 8 threads)",
                        ["case", "median ms", "p99 ms", "ratio"], rows)
    text += "\n" + common.table(
        f"Peak RSS of the API under {CONCURRENT} concurrent 10 MB events (VmHWM of the gunicorn worker)",
        ["store", "peak before MB", "peak under load MB", f"under {RSS_GOAL_MB:g} MB", "errors"],
        [[{"embedded": "embedded (files in the API's memory)", "separate": "own process (wire server)"}[row["store"]],
          row["idle_peak_mb"], row["peak_mb"], "yes" if row["peak_mb"] < RSS_GOAL_MB else "NO", row["errors"]]
         for row in result["rss"]])
    common.save("payload", {**result, "table": text})
    return result


if __name__ == "__main__":
    run()

"""Drive a peer (celery or prefect) from benchmarks/.peers/venv and print its figures as one JSON line.

`python peer_driver.py celery|prefect URL [URL ...]`; BENCH_SAMPLES / BENCH_EVENTS / BENCH_CLIENTS bound it.
Only the standard library, requests and the peer are imported: the project is not installed here.
"""

from __future__ import annotations

import json
import math
import os
import statistics
import sys
import threading
import time

SAMPLES = int(os.environ.get("BENCH_SAMPLES", "200"))
EVENTS = int(os.environ.get("BENCH_EVENTS", "400"))
CLIENTS = int(os.environ.get("BENCH_CLIENTS", "8"))
TIME_LIMIT_S = float(os.environ.get("BENCH_TIME_LIMIT_S", "60"))


def summary(values: list[float]) -> dict:
    values = sorted(values)
    if not values:
        return {"n": 0, "median_ms": None, "p99_ms": None}
    p99 = values[min(len(values) - 1, math.ceil(0.99 * len(values)) - 1)]
    return {"n": len(values), "median_ms": round(statistics.median(values) * 1000, 3),
            "p99_ms": round(p99 * 1000, 3)}


def measure(run_once, warmup: int = 3) -> dict:
    for _ in range(warmup):
        run_once()
    latencies = []
    deadline = time.monotonic() + TIME_LIMIT_S
    while len(latencies) < SAMPLES and time.monotonic() < deadline:
        started = time.perf_counter()
        run_once()
        latencies.append(time.perf_counter() - started)
    lock, remaining, loaded, errors = threading.Lock(), [EVENTS], [], [0]
    deadline = time.monotonic() + TIME_LIMIT_S

    def client():
        while time.monotonic() < deadline:
            with lock:
                if remaining[0] <= 0:
                    return
                remaining[0] -= 1
            started = time.perf_counter()
            try:
                run_once()
            except Exception:  # counted in the figures
                with lock:
                    errors[0] += 1
                continue
            with lock:
                loaded.append(time.perf_counter() - started)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(CLIENTS)]
    started = time.perf_counter()
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(TIME_LIMIT_S + 30)
    elapsed = time.perf_counter() - started
    return {"sequential": summary(latencies),
            "concurrent": {"clients": CLIENTS, "events_per_s": round(len(loaded) / elapsed, 1),
                           "errors": errors[0], **summary(loaded)}}


def celery_runner(urls: list[str]):
    from celery import chain
    from peer_tasks import call

    def run_once():
        steps = [call.s("hello world", urls[0]), *(call.s(url) for url in urls[1:])]
        assert chain(*steps).apply_async().get(timeout=30) == "hello world"
    return run_once


def prefect_runner(urls: list[str]):
    import requests
    from prefect import flow, task

    @task
    def step(message: str, url: str) -> str:
        reply = requests.post(url, json={"message": message}, timeout=10)
        reply.raise_for_status()
        return reply.json()["message"]

    @flow(log_prints=False, persist_result=False)
    def chain_flow(message: str) -> str:
        for url in urls:
            message = step(message, url)
        return message

    def run_once():
        assert chain_flow("hello world") == "hello world"
    return run_once


def main(argv: list[str]) -> int:
    peer, urls = argv[0], argv[1:]
    runner = {"celery": celery_runner, "prefect": prefect_runner}[peer](urls)
    print(json.dumps({"peer": peer, **measure(runner)}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Drive Celery for the tree benchmark from benchmarks/.peers/venv; print the figures as one JSON line.

`python tree_peer.py group URL BRANCHES SAMPLES`: a `group` of BRANCHES calls, one after another,
each sample's seconds. `python tree_peer.py chord URL ITEMS ROUNDS`: a `chord` of ITEMS calls with a
counting callback, each round's seconds. Only the standard library, requests and Celery are imported.
"""

from __future__ import annotations

import json
import os
import sys
import time

TIME_LIMIT_S = float(os.environ.get("BENCH_TIME_LIMIT_S", "60"))


def timed(run_once, times: int, warmup: int) -> list[float]:
    for _ in range(warmup):
        run_once()
    seconds = []
    deadline = time.monotonic() + TIME_LIMIT_S
    while len(seconds) < times and time.monotonic() < deadline:
        started = time.perf_counter()
        run_once()
        seconds.append(time.perf_counter() - started)
    return seconds


def main(argv: list[str]) -> int:
    from celery import chord, group
    from peer_tasks import call, count

    mode, url, width, times = argv[0], argv[1], int(argv[2]), int(argv[3])
    if mode == "group":
        def run_once():
            # get() polls every 0.5 s unless told: ask often, so the wait is not what is measured.
            replies = group(call.s("hello world", url) for _ in range(width)).apply_async().get(
                timeout=60, interval=0.002)
            assert replies == ["hello world"] * width
        seconds = timed(run_once, times, warmup=3)
    elif mode == "chord":
        def run_once():
            done = chord(call.s(f"item {index}", url) for index in range(width))(count.s()).get(timeout=600)
            assert done == width
        seconds = timed(run_once, times, warmup=1)
    else:
        raise SystemExit(f"unknown mode {mode!r}: group or chord")
    print(json.dumps({"mode": mode, "seconds": seconds}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""Memory: one Machinery worker process holding 1,000 waiting events (its service answers 202 and
never calls back) must stay under 200 MB RSS."""

from __future__ import annotations

import contextlib
from pathlib import Path

import requests

from benchmarks import common

WAITING = 1000
LIMIT_MB = 200.0
MESSAGE = {"message": "hello world"}


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


def worker_pid(master: int) -> int:
    """The gunicorn worker: the master's only child."""
    children = Path(f"/proc/{master}/task/{master}/children").read_text().split()
    if len(children) != 1:
        raise RuntimeError(f"expected one gunicorn worker under {master}, found {children}")
    return int(children[0])


def run() -> dict:
    with contextlib.ExitStack() as stack:
        echo = common.start_echo(stack, name="echo-accept")
        api, process = common.start_machinery(stack, name="machinery-memory")
        workflow = common.http_register(api, echo, 1, path="accept")
        worker = worker_pid(process.pid)
        session = requests.Session()
        for _ in range(20):
            common.post_ok(session, f"{api}/e/{workflow}", MESSAGE, expect=202)
        before = rss_mb(worker)
        _, _, errors = common.concurrent(common.poster(f"{api}/e/{workflow}", MESSAGE, expect=202), 8, WAITING,
                                         warmup=0)
        waiting = session.get(f"{api}/events", params={"status": "waiting", "page_size": 1}, timeout=30).json()
        after = rss_mb(worker)
    result = {"waiting_events": waiting["total"], "rss_before_mb": round(before, 1), "rss_after_mb": round(after, 1),
              "per_event_kb": round((after - before) * 1024 / max(1, waiting["total"] - 20), 1),
              "limit_mb": LIMIT_MB, "within_limit": after < LIMIT_MB, "errors": errors}
    text = common.table("Memory of the worker holding waiting events (embedded store, 1 gunicorn worker)",
                        ["events waiting", "RSS after warm-up MB", "RSS holding them MB", "per event KB",
                         f"under {LIMIT_MB:g} MB"],
                        [[result["waiting_events"], result["rss_before_mb"], result["rss_after_mb"],
                          result["per_event_kb"], "yes" if result["within_limit"] else "NO"]])
    common.save("memory", {**result, "table": text})
    return result


if __name__ == "__main__":
    run()

"""Tree: control flow of version 2 workflows (`steps`), against a floor and Celery, in one run.

- Parallel: 10 branches, each one call to a service that sleeps 50 ms; sync event median (target
  ≤ 60 ms) against the 10 calls made at once from a ThreadPoolExecutor (the floor) and a Celery
  `group` of the same 10 calls on Redis.
- Map: 1,000 items, each one call to the trivial echo service, at max_concurrency 8 and 32;
  items/s against the floor (a ThreadPoolExecutor of the same width making the same calls through
  Machinery's own client, in one process) and a Celery `chord` of the same calls (a worker of the
  same width). Targets: ≥ 0.7 × the floor, ≥ 1.5 × Celery.
- Machinery's events and the floor's take turns, round by round, so that the load of the machine
  weighs on both sides of a ratio alike.
- Size: store writes per map item and the stored event's BSON size for a 10,000-item map (in
  process, `store.writes` as in overhead), and the API process's RSS while it runs one under
  gunicorn (target < 300 MB).

Knobs: BENCH_TREE_SAMPLES (parallel events, 100), BENCH_TREE_ROUNDS (map events per cell, 3),
BENCH_TREE_MAP_ITEMS (1000), BENCH_TREE_SIZE_ITEMS (10000), BENCH_TIME_LIMIT_S.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import statistics
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import requests

from benchmarks import common, peers
from benchmarks.apps import lean_call
from benchmarks.common import interleaved
from benchmarks.memory import rss_mb, worker_pid

BRANCHES = 10
SLEEP_MS = 50
WIDTHS = (8, 32)
SAMPLES = int(os.environ.get("BENCH_TREE_SAMPLES", "100"))
ROUNDS = int(os.environ.get("BENCH_TREE_ROUNDS", "3"))
MAP_ITEMS = int(os.environ.get("BENCH_TREE_MAP_ITEMS", "1000"))
SIZE_ITEMS = int(os.environ.get("BENCH_TREE_SIZE_ITEMS", "10000"))
SERVICE_THREADS = 48  # above the widest map and the Celery worker, so the service is never the queue
MESSAGE = {"message": "hello world"}
FIELD = [{"name": "message", "type": "string"}]
STRINGS = {"type": "array", "items": "string"}
RSS_LIMIT_MB = 300.0
# A 10,000-item sync event outlasts gunicorn's default 120 s silence only on a very slow machine; the
# bound on calls in flight is set above the widest map so that it is not what is measured.
MACHINERY_ENV = {"MACHINERY_GUNICORN_TIMEOUT": "600", "MACHINERY_MAX_CALLS": "64"}


# -- definitions (machinery.language: a workflow of `steps`) --------------------------------

def parallel_definitions(sleepy_url: str) -> tuple[list[dict], dict]:
    """Service `sleepy` and workflow `parallel-10`: one parallel step of 10 branches, each one call
    writing its own key (branches never write the same key)."""
    service = {"name": "sleepy", "address": f"{sleepy_url}/sleep", "inputs": FIELD, "outputs": FIELD}
    branches = {f"b{index}": [{"id": f"call{index}", "call": "sleepy", "in": {"message": "message"},
                               "out": {"message": f"m{index}"}}] for index in range(BRANCHES)}
    workflow = {"name": f"parallel-{BRANCHES}", "inputs": FIELD,
                "outputs": [{"name": f"m{index}", "type": "string"} for index in range(BRANCHES)],
                "steps": [{"id": "fan", "parallel": branches}]}
    return [service], workflow


def map_definitions(echo_url: str, width: int) -> tuple[list[dict], dict]:
    """Service `item-echo` and workflow `map-<width>`: a map over `items`, one call per item, the
    replies collected in order."""
    service = {"name": "item-echo", "address": f"{echo_url}/s0", "inputs": FIELD, "outputs": FIELD}
    workflow = {"name": f"map-{width}", "inputs": [{"name": "items", "type": STRINGS}],
                "outputs": [{"name": "replies", "type": STRINGS}],
                "steps": [{"id": "each", "map": "items", "as": "item", "max_concurrency": width,
                           "steps": [{"id": "echo", "call": "item-echo", "in": {"message": "item"},
                                      "out": {"message": "reply"}}],
                           "collect": {"replies": "reply"}}]}
    return [service], workflow


def items(count: int) -> dict:
    return {"items": [f"item {index}" for index in range(count)]}


def register(post, services: list[dict], workflow: dict) -> str:
    for service in services:
        post("/services", service)
    post("/workflows", workflow)
    return workflow["name"]


def http_post(api: str):
    def post(where: str, body: dict) -> None:
        reply = requests.post(api + where, json=body, timeout=30)
        if reply.status_code == 409 and where == "/services":
            return  # already registered by an earlier cell
        if reply.status_code not in (200, 201):
            raise RuntimeError(f"POST {where}: {reply.status_code} {reply.text[:500]}")
    return post


# -- running one event ----------------------------------------------------------------------

def run_event(session: requests.Session, api: str, workflow: str, body: dict, timeout_s: float = 600) -> dict:
    """One sync event; if the API answers 202 (it handed the event on), its record is polled until it
    ends, bounded by `timeout_s`. Returns the final record (or reply) and raises unless completed."""
    reply = session.post(f"{api}/e/{workflow}", json=body, timeout=timeout_s)
    if reply.status_code == 202:
        event_id = reply.json()["event_id"]
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            record = session.get(f"{api}/events/{event_id}", timeout=30).json()
            if record.get("status") in ("completed", "failed"):
                break
            time.sleep(0.01)
        reply_body = record
    elif reply.status_code == 201:
        reply_body = reply.json()
    else:
        raise RuntimeError(f"POST /e/{workflow}: {reply.status_code} {reply.text[:500]}")
    if reply_body.get("status") != "completed":
        raise RuntimeError(f"event of {workflow} ended {reply_body.get('status')}: {str(reply_body)[:500]}")
    return reply_body


def timed_events(send, times: int, warmup: int) -> list[float]:
    return interleaved({"one": send}, times, warmup)["one"]


# -- the floor and Celery -------------------------------------------------------------------

def floor_send(pool: ThreadPoolExecutor, url: str, count: int):
    """`count` calls through `pool` (threads calling with Machinery's client, a connection per thread)."""
    def send():
        replies = list(pool.map(lambda index: lean_call(url, {"message": f"item {index}"})["message"], range(count)))
        assert len(replies) == count
    return send


def celery_seconds(mode: str, url: str, width: int, times: int, concurrency: int) -> dict:
    """A Celery group or chord (tree_peer.py, in the peers' venv) on its own Redis and worker."""
    with contextlib.ExitStack() as stack:
        env = peers.start_celery(stack, concurrency, name=f"celery-{mode}-{concurrency}")
        if isinstance(env, str):
            print(f"celery {mode}: skipped: {env}", flush=True)
            return {"skipped": env}
        command = [str(peers.VENV / "bin" / "python"), str(common.HERE / "tree_peer.py"), mode, url, str(width),
                   str(times)]
        done = subprocess.run(command, env={**os.environ, **env}, capture_output=True, text=True,
                              timeout=common.TIME_LIMIT_S + 600, cwd=common.PEERS)
        lines = [line for line in done.stdout.splitlines() if line.startswith("{")]
        if done.returncode != 0 or not lines:
            reason = f"driver exited {done.returncode}: {done.stderr.strip()[-600:]}"
            print(f"celery {mode}: failed: {reason}", flush=True)
            return {"skipped": reason}
        return {"seconds": json.loads(lines[-1])["seconds"]}


def median_s(seconds: list[float] | None) -> float | None:
    return statistics.median(seconds) if seconds else None


# -- the three parts ------------------------------------------------------------------------

def failed(part: str, error: Exception) -> dict:
    reason = f"{error.__class__.__name__}: {error}"
    print(f"tree {part}: Machinery failed: {reason}", flush=True)
    return {"skipped": reason}


def measured_beside_floor(ours, skipped: str | None, pool: ThreadPoolExecutor, url: str, count: int, times: int,
                          warmup: int, part: str) -> tuple[list[float] | None, str | None, list[float]]:
    """Machinery's events (`ours`, a send, or None when it could not be set up, `skipped` saying why) and
    the floor's calls, taking turns: (Machinery's seconds or None, why it was skipped, the floor's seconds)."""
    floor = floor_send(pool, url, count)
    if ours is not None:
        try:
            seconds = interleaved({"machinery": ours, "floor": floor}, times, warmup)
            return seconds["machinery"], None, seconds["floor"]
        except Exception as error:  # the floor is still measured, for when it works
            skipped = failed(part, error)["skipped"]
    return None, skipped, timed_events(floor, times, warmup)


def parallel(api: str, sleepy_url: str) -> dict:
    session = requests.Session()
    ours, skipped = None, None
    try:
        workflow = register(http_post(api), *parallel_definitions(sleepy_url))
        body = run_event(session, api, workflow, MESSAGE)
        outputs = body.get("outputs", {})
        if any(outputs.get(f"m{index}") != MESSAGE["message"] for index in range(BRANCHES)):
            raise RuntimeError(f"parallel-{BRANCHES}: outputs {outputs}")
        ours = functools.partial(run_event, session, api, workflow, MESSAGE)
    except Exception as error:  # the floor and Celery are still measured, for when it works
        skipped = failed("parallel", error)["skipped"]
    with ThreadPoolExecutor(BRANCHES) as pool:
        seconds, skipped, floor = measured_beside_floor(ours, skipped, pool, f"{sleepy_url}/sleep", BRANCHES,
                                                        SAMPLES, 5, "parallel")
    results = {"machinery": common.summary(seconds) if seconds else {"skipped": skipped},
               "floor": common.summary(floor)}
    celery = celery_seconds("group", f"{sleepy_url}/sleep", BRANCHES, SAMPLES, 32)
    results["celery"] = celery if "skipped" in celery else common.summary(celery["seconds"])
    return results


def map_rates(api: str, echo_url: str) -> dict:
    session = requests.Session()
    body = items(MAP_ITEMS)
    results = {}
    for width in WIDTHS:
        ours, skipped = None, None
        try:
            workflow = register(http_post(api), *map_definitions(echo_url, width))
            reply = run_event(session, api, workflow, items(20))
            if reply.get("outputs", {}).get("replies") != items(20)["items"]:
                raise RuntimeError(f"map-{width}: outputs {str(reply.get('outputs'))[:300]}")
            ours = functools.partial(run_event, session, api, workflow, body)
        except Exception as error:  # the floor and Celery are still measured, for when it works
            skipped = failed(f"map-{width}", error)["skipped"]
        with ThreadPoolExecutor(width) as pool:
            seconds, skipped, floor_s = measured_beside_floor(ours, skipped, pool, f"{echo_url}/s0", MAP_ITEMS,
                                                              ROUNDS, 1, f"map-{width}")
        machinery, floor = median_s(seconds), median_s(floor_s)
        celery = celery_seconds("chord", f"{echo_url}/s0", MAP_ITEMS, ROUNDS, width)
        celery_s = median_s(celery.get("seconds"))
        results[width] = {"machinery_items_per_s": round(MAP_ITEMS / machinery, 1) if machinery else None,
                          "machinery_skipped": skipped,
                          "floor_items_per_s": round(MAP_ITEMS / floor, 1),
                          "celery_items_per_s": round(MAP_ITEMS / celery_s, 1) if celery_s else None,
                          "celery_skipped": celery.get("skipped")}
    return results


def writes_and_size(echo_url: str, count: int = SIZE_ITEMS) -> dict:
    """Store writes per item and the stored event's BSON size of one `count`-item map, in process."""
    import bson
    from bson import ObjectId

    with contextlib.ExitStack() as stack:
        app = common.in_process(stack, "bench-tree-size")
        client = app.test_client()
        store = app.extensions["machinery"].store

        def post(path, body):
            reply = client.post(path, json=body)
            assert reply.status_code in (200, 201), reply.get_json()

        workflow = register(post, *map_definitions(echo_url, 32))
        before = store.writes
        reply = client.post(f"/e/{workflow}", json=items(count))
        writes = store.writes - before
        record = reply.get_json()
        if reply.status_code != 201 or record.get("status") != "completed":
            raise RuntimeError(f"in-process map of {count}: {reply.status_code} {str(record)[:500]}")
        document = store.events.find_one({"_id": ObjectId(record["event_id"])})
        runs = store.db["step_runs"].count_documents({"event_id": {"$in": [record["event_id"],
                                                                         ObjectId(record["event_id"])]}})
    return {"items": count, "store_writes": writes, "writes_per_item": round(writes / count, 3),
            "event_bson_bytes": len(bson.encode(document)), "step_run_documents": runs}


def rss_while_running(api: str, process: common.Process, echo_url: str, count: int = SIZE_ITEMS) -> dict:
    """The API process's RSS, sampled every 0.1 s while it runs one `count`-item map."""
    worker = worker_pid(process.pid)
    workflow = register(http_post(api), *map_definitions(echo_url, 32))
    session = requests.Session()
    run_event(session, api, workflow, items(20))
    before = rss_mb(worker)
    peak = [before]
    done = threading.Event()

    def sample():
        while not done.wait(0.1):
            peak[0] = max(peak[0], rss_mb(worker))

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    started = time.perf_counter()
    try:
        run_event(session, api, workflow, items(count))
    finally:
        done.set()
        sampler.join(5)
    return {"items": count, "seconds": round(time.perf_counter() - started, 2), "rss_before_mb": round(before, 1),
            "rss_peak_mb": round(peak[0], 1), "rss_after_mb": round(rss_mb(worker), 1),
            "within_limit": peak[0] < RSS_LIMIT_MB}


def run() -> dict:
    results: dict = {}
    with contextlib.ExitStack() as stack:
        sleepy_port, echo_port = common.free_port(), common.free_port()
        sleepy = common.Process("sleepy", common.gunicorn("benchmarks.apps:sleepy", sleepy_port, SERVICE_THREADS),
                                env={"BENCH_SLEEP_MS": str(SLEEP_MS)})
        stack.callback(sleepy.stop)
        echo = common.Process("echo-tree", common.gunicorn("benchmarks.apps:echo", echo_port, SERVICE_THREADS))
        stack.callback(echo.stop)
        sleepy_url, echo_url = f"http://{common.LOCAL}:{sleepy_port}", f"http://{common.LOCAL}:{echo_port}"
        common.wait_for_post(f"{sleepy_url}/sleep", sleepy)
        common.wait_for_post(f"{echo_url}/s0", echo)
        for name, part in (("parallel", lambda api, _: parallel(api, sleepy_url)),
                           ("map", lambda api, _: map_rates(api, echo_url)),
                           ("rss", lambda api, process: rss_while_running(api, process, echo_url))):
            # A fresh Machinery for each part, so each starts from an empty embedded store.
            with contextlib.ExitStack() as inner:
                try:
                    api, process = common.start_machinery(inner, name=f"machinery-tree-{name}", env=MACHINERY_ENV)
                    results[name] = part(api, process)
                except Exception as error:  # one part failing is reported, the others still measured
                    results[name] = {"failed": f"{error.__class__.__name__}: {error}"}
                    print(f"tree {name}: failed: {results[name]['failed']}", flush=True)
        try:
            results["size"] = writes_and_size(echo_url)
        except Exception as error:
            results["size"] = {"failed": f"{error.__class__.__name__}: {error}"}
            print(f"tree size: failed: {results['size']['failed']}", flush=True)
    tables = report(results)
    common.save("tree", {"samples": SAMPLES, "rounds": ROUNDS, "map_items": MAP_ITEMS, "size_items": SIZE_ITEMS,
                         "results": results, "table": "\n".join(tables)})
    return results


def floor_with_work(work_us: tuple[int, ...] = (0, 100, 200, 300), rounds: int = 3) -> dict:
    """The map floor with a fixed amount of CPU added after each call, on the floor's own threads:
    how much an orchestrator's own work per item (done under the interpreter lock, as Machinery's is)
    costs the items/s at each width. `python -c "from benchmarks import tree; tree.floor_with_work()"`."""
    def busy(microseconds: int) -> None:
        end = time.thread_time() + microseconds / 1e6
        while time.thread_time() < end:
            pass

    rates: dict[int, dict[int, list[float]]] = {width: {work: [] for work in work_us} for width in WIDTHS}
    with contextlib.ExitStack() as stack:
        port = common.free_port()
        echo = common.Process("echo-floor-work", common.gunicorn("benchmarks.apps:echo", port, SERVICE_THREADS))
        stack.callback(echo.stop)
        url = f"http://{common.LOCAL}:{port}/s0"
        common.wait_for_post(url, echo)
        for width in WIDTHS:
            with ThreadPoolExecutor(width) as pool:
                def one(index: int, work: int) -> None:
                    lean_call(url, {"message": f"item {index}"})
                    busy(work)
                list(pool.map(lambda index: one(index, 0), range(300)))  # warm-up: connections made
                for _ in range(rounds):  # the amounts interleaved, so that load drifts on all alike
                    for work in work_us:
                        started = time.perf_counter()
                        list(pool.map(lambda index, work=work: one(index, work), range(MAP_ITEMS)))
                        rates[width][work].append(MAP_ITEMS / (time.perf_counter() - started))
    medians = {width: {work: statistics.median(values) for work, values in by_work.items()}
               for width, by_work in rates.items()}
    rows = [[f"{work} µs", *(value for width in WIDTHS for value in
                             (round(medians[width][work]), common.ratio(medians[width][work], medians[width][0])))]
            for work in work_us]
    common.table(f"Floor with CPU added per call ({MAP_ITEMS} calls, medians of {rounds})",
                 ["CPU added per call", *(column for width in WIDTHS
                                          for column in (f"items/s at {width}", "÷ no work added"))], rows)
    return medians


def report(results: dict) -> list[str]:
    tables = []
    part = results.get("parallel", {})
    if "failed" not in part:
        base = part["floor"]["median_ms"]
        rows = []
        for name, entry in part.items():
            note = entry.get("skipped", "")[:90]
            if name == "machinery" and not note:
                note = "target ≤ 60 ms: " + ("met" if entry["median_ms"] <= 60 else "NOT met")
            rows.append([name, entry.get("median_ms"), entry.get("p99_ms"), common.ratio(entry.get("median_ms"), base),
                         note])
        tables.append(common.table(
            f"Parallel: {BRANCHES} branches × one {SLEEP_MS} ms call, sync event, 1 client, {SAMPLES} events",
            ["system", "median ms", "p99 ms", "median ÷ floor", "note"], rows))
    part = results.get("map", {})
    if "failed" not in part:
        rows = []
        for width, entry in part.items():
            ours, floor, celery = (entry["machinery_items_per_s"], entry["floor_items_per_s"],
                                   entry["celery_items_per_s"])
            entry["ratio_vs_floor"], entry["ratio_vs_celery"] = common.ratio(ours, floor), common.ratio(ours, celery)
            note = "; ".join(f"{who}: {entry[key][:70]}" for who, key in (("Machinery", "machinery_skipped"),
                                                                          ("Celery", "celery_skipped")) if entry[key])
            rows.append([width, ours, floor, celery, entry["ratio_vs_floor"], entry["ratio_vs_celery"], note])
        tables.append(common.table(
            f"Map: {MAP_ITEMS} items × one trivial call, items/s (median of {ROUNDS} events each)",
            ["max_concurrency", "Machinery", "floor (ThreadPoolExecutor)", "Celery chord",
             "÷ floor (target ≥ 0.7)", "÷ Celery (target ≥ 1.5)", "note"], rows))
    size, rss = results.get("size", {}), results.get("rss", {})
    rows = []
    if "failed" not in size:
        rows += [["store writes per item (in process)", size["writes_per_item"], f"{size['store_writes']} writes"],
                 ["event document, BSON bytes", size["event_bson_bytes"], f"{size['step_run_documents']} step runs"]]
    if "failed" not in rss:
        rows += [["API RSS before, MB", rss["rss_before_mb"], ""],
                 ["API RSS peak while running, MB", rss["rss_peak_mb"],
                  f"< {RSS_LIMIT_MB:g} MB: {'met' if rss['within_limit'] else 'NOT met'}"],
                 ["seconds for the event (gunicorn)", rss["seconds"], ""]]
    if rows:
        tables.append(common.table(f"Size: one map of {SIZE_ITEMS:,} items", ["measure", "value", "note"], rows))
    return tables


if __name__ == "__main__":
    run()

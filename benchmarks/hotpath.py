"""The hot path of a sync 3-step event, profiled in process (cProfile; pyinstrument too when installed),
and the CPU a call to a REST-style service costs beside today's POST."""

from __future__ import annotations

import contextlib
import cProfile
import io
import pstats
import statistics
import time

from benchmarks import common

EVENTS = 300
MESSAGE = {"message": "hello world"}
ROUNDS = 150  # pairs of batches, one of each kind of call
BATCH = 10
SECRET = "bench-token-0123456789"


def calls_cpu(rounds: int = ROUNDS) -> dict:
    """CPU (this thread: Machinery and the test client, which serve a sync event in it) per one-step
    sync event: a version 1 POST of one input, and a GET with a path parameter, two templated headers
    (one a secret) and an output selected by JMESPath from a nested reply. The service runs in another
    process, so its CPU is not counted."""
    with contextlib.ExitStack() as stack:
        port = common.free_port()
        server = common.Process("rest", common.gunicorn("benchmarks.apps:rest", port, common.SERVICE_THREADS))
        stack.callback(server.stop)
        url = f"http://{common.LOCAL}:{port}"
        common.wait_for_post(f"{url}/s0", server)
        client = common.in_process(stack, "bench-calls").test_client()

        def post(path, body, method="post"):
            reply = getattr(client, method)(path, json=body)
            assert reply.status_code in (200, 201), reply.get_json()

        field = [{"name": "message", "type": "string"}]
        post("/services", {"name": "post", "address": f"{url}/s0", "inputs": field, "outputs": field})
        post("/workflows", {"name": "post", "services": ["post"], "inputs": field, "outputs": field})
        post("/secrets/bench_token", {"value": SECRET}, method="put")
        inputs = [{"name": "order_id", "type": "string"}, {"name": "tenant", "type": "string"}]
        total = [{"name": "total", "type": "float"}]
        post("/services", {"name": "get", "address": url, "inputs": inputs,
                           "outputs": [{**total[0], "from": "body.order.total"}],
                           "request": {"method": "GET", "path": "/orders/{order_id}",
                                       "headers": {"Authorization": "Bearer {secret.bench_token}",
                                                   "X-Tenant": "{tenant}"}}})
        post("/workflows", {"name": "get", "services": ["get"], "inputs": inputs, "outputs": total})
        bodies = {"post": MESSAGE, "get": {"order_id": "A/7 é", "tenant": "acme"}}

        def cpu_per_event(name: str, count: int) -> float:
            body = bodies[name]
            started = time.thread_time()
            for _ in range(count):
                reply = client.post(f"/e/{name}", json=body)
                assert reply.status_code == 201, reply.get_json()
            return (time.thread_time() - started) / count * 1000

        for name in bodies:
            cpu_per_event(name, 50)  # warm-up
        # Small batches, alternating: the machine's load drifts over seconds, and a pair of batches a
        # few milliseconds apart sees the same load, so the median of the pairs' differences holds.
        samples: dict[str, list[float]] = {"post": [], "get": []}
        differences = []
        for _ in range(rounds):
            post_ms, get_ms = cpu_per_event("post", BATCH), cpu_per_event("get", BATCH)
            samples["post"].append(post_ms)
            samples["get"].append(get_ms)
            differences.append(get_ms - post_ms)
        parts = _parts(client.application)
    medians = {name: round(statistics.median(values), 4) for name, values in samples.items()}
    extra = round(statistics.median(differences), 4)
    common.table(f"CPU per one-step sync event, ms (medians of {rounds} alternating pairs of {BATCH}-event batches)",
                 ["version 1 POST", "GET, path param, 2 templated headers (1 secret), JMESPath output",
                  "difference (median of pairs)", "target"],
                 [[medians["post"], medians["get"], extra, "≤ 0.1"]])
    common.table("What a REST-style call adds, µs of CPU per call (each part timed alone)",
                 list(parts), [list(parts.values())])
    return {"cpu_ms_per_event": medians, "extra_ms": extra, "parts_us": parts, "rounds": samples}


def _parts(app, number: int = 20000) -> dict:
    """Each piece of work a REST-style call does that a version 1 POST does not, timed alone."""
    import json
    import timeit

    from machinery.runtime import calls

    runtime = app.extensions["machinery"]
    service = runtime.store.get_service("get")
    compiled = calls.compiled(service)
    headers = {"Content-Type": "application/json", "X-Machinery-Event": "e" * 24, "X-Machinery-Step": "0",
               "Idempotency-Key": "e" * 24 + ":0"}
    inputs = {"order_id": "A/7 é", "tenant": "acme"}
    keeper = runtime.executor.secrets
    raw = json.dumps({"order": {"id": "A/7 é", "total": 12.5, "lines": [{"sku": "a-1", "qty": 2}]}}).encode()
    view = compiled.view(200, {}, raw)
    work = {
        "find the compiled call": lambda: calls.compiled(service),
        "read the secret": lambda: keeper.value("bench_token"),
        "build the request": lambda: compiled.prepare(inputs, headers, keeper.value),
        "select the outputs": lambda: compiled.select(view),
        "mask the outputs": lambda: calls.mask({"total": 12.5}, [SECRET]),
    }
    parts = {name: round(timeit.timeit(job, number=number) / number * 1e6, 2) for name, job in work.items()}
    parts["total (the request includes the secret's read)"] = round(
        sum(parts.values()) - parts["read the secret"], 2)
    return parts


def run(events: int = EVENTS, top: int = 25) -> dict:
    with contextlib.ExitStack() as stack:
        echo = common.start_echo(stack)
        client = common.in_process(stack, "bench-hotpath").test_client()

        def post(path, body):
            assert client.post(path, json=body).status_code in (200, 201)

        workflow = common.register(post, echo, 3)

        def send():
            reply = client.post(f"/e/{workflow}", json=MESSAGE)
            assert reply.status_code == 201, reply.get_json()

        for _ in range(30):
            send()
        plain = common.summary(common.sequential(send, samples=events, warmup=0))
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        for _ in range(events):
            send()
        profiler.disable()
        profiled_s = time.perf_counter() - started
        out = io.StringIO()
        stats = pstats.Stats(profiler, stream=out)
        stats.sort_stats("tottime").print_stats(top)
        stats.sort_stats("cumulative").print_stats(top)
        report = out.getvalue()
        tree = None
        try:
            from pyinstrument import Profiler
        except ImportError:
            pass
        else:
            sampler = Profiler(interval=0.0005)
            sampler.start()
            for _ in range(events):
                send()
            sampler.stop()
            tree = sampler.output_text(unicode=False, color=False, show_all=False)
    print(report)
    if tree:
        print(tree)
    text = common.table(f"In-process sync 3-step event ({events} events, Flask test client, no front server)",
                        ["median ms", "p99 ms", "profiled ms/event"],
                        [[plain["median_ms"], plain["p99_ms"], round(profiled_s / events * 1000, 3)]])
    compared = calls_cpu()
    common.save("hotpath", {"events": events, "latency": plain, "cprofile": report, "pyinstrument": tree,
                            "table": text, "calls": compared})
    return plain


if __name__ == "__main__":
    run()

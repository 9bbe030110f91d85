"""The hot path of a sync 3-step event, profiled in process (cProfile; pyinstrument too when installed)."""

from __future__ import annotations

import contextlib
import cProfile
import io
import pstats
import time

from benchmarks import common

EVENTS = 300
MESSAGE = {"message": "hello world"}


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
    common.save("hotpath", {"events": events, "latency": plain, "cprofile": report, "pyinstrument": tree,
                            "table": text})
    return plain


if __name__ == "__main__":
    run()

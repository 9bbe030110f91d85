"""A tree event survives kill -9: a worker killed halfway through a 1,000-item map, inside a parallel step, or
while a sleep waits, leaves the event to another worker, which resumes only what had not finished.

Processes share the store as in test_workers (MACHINERY_TEST_MONGO_URI, or the wire-protocol test server);
the test service counts its calls per Idempotency-Key, which names the event and the step instance.
"""

from __future__ import annotations

import signal
from collections import Counter

import pytest

from machinery.serving import ServerThread
from tests.e2e.test_workers import env, store  # noqa: F401 - the shared store's fixtures
from tests.support.processes import gunicorn_api, start_worker, stop, wait_until
from tests.support.tree_services import tree_services

pytestmark = pytest.mark.e2e

INT = {"name": "n", "type": "int"}
ITEMS = 1000


@pytest.fixture
def counting():
    app = tree_services()
    server = ServerThread(app).start()
    yield server.url.rstrip("/"), app
    server.stop()


def register(http, api, url, delay_s):
    assert http.post(f"{api}/services", json={
        "name": "double", "address": f"{url}/double?delay={delay_s}", "retry": {"max_attempts": 3, "backoff_s": 0.1},
        "inputs": [INT], "outputs": [INT]}, timeout=10).status_code in (200, 201)


def workflow(http, api, name, steps, inputs, outputs):
    reply = http.post(f"{api}/workflows", json={"name": name, "steps": steps, "inputs": inputs, "outputs": outputs},
                      timeout=10)
    assert reply.status_code in (200, 201), reply.text


def crash_and_resume(env, store, event_id, until_halfway, seconds=240):  # noqa: F811
    """Start a worker, kill -9 it once `until_halfway()` holds, start another, and wait for the end."""
    first = start_worker(env, "--threads", "2")
    try:
        wait_until(until_halfway, 120, 0.1, "the first worker got halfway")
    finally:
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
    second = start_worker(env, "--threads", "2")
    try:
        return wait_until(lambda: (e := store.get_event(event_id))["status"] in ("completed", "failed") and e,
                          seconds, 0.25, "the event ended with the second worker")
    finally:
        assert stop(second) == 0


def records(store, event_id, node):  # noqa: F811
    return list(store.step_runs.find({"event_id": event_id, "node": node}, {"_id": 0}))


def test_kill_9_halfway_through_a_1000_item_map(http, env, store, counting):  # noqa: F811
    url, app = counting
    with gunicorn_api(env) as api:
        register(http, api, url, delay_s=0.005)
        workflow(http, api, "big-map", [
            {"id": "each", "map": "values", "as": "v", "max_concurrency": 8,
             "steps": [{"id": "hold", "call": "double", "in": {"n": "v"}}], "collect": {"results": "n"}}],
            [{"name": "values", "type": {"type": "array", "items": "int"}}],
            [{"name": "results", "type": {"type": "array", "items": "int"}}])
        sent = http.post(f"{api}/e/big-map?mode=async", json={"values": list(range(ITEMS))}, timeout=30)
        assert sent.status_code == 202
        event_id = sent.json()["event_id"]
        event = crash_and_resume(env, store, event_id,
                                 lambda: store.step_runs.count_documents({"event_id": event_id}) >= ITEMS // 2)
    assert event["status"] == "completed", event.get("error")
    assert event["outputs"]["results"] == [2 * n for n in range(ITEMS)]
    done = Counter(record["item"] for record in records(store, event_id, "hold") if record["status"] == "completed")
    assert sorted(done) == list(range(ITEMS)) and set(done.values()) == {1}  # every item completed once
    calls = app.config["counts"]
    assert max(calls.values()) <= 2 and len(calls) == ITEMS  # no item called more than twice
    assert len(event["claims"]) >= 2


def test_kill_9_inside_a_parallel_step(http, env, store, counting):  # noqa: F811
    url, app = counting
    with gunicorn_api(env) as api:
        register(http, api, url, delay_s=0.6)
        branches = {f"b{number}": [{"id": f"s{number}", "call": "double", "out": {"n": f"n{number}"}}]
                    for number in range(4)}
        branches["slow"] = [{"id": "first", "call": "double", "out": {"n": "m"}},
                            {"id": "second", "call": "double", "in": {"n": "m"}, "out": {"n": "last"}}]
        outputs = [{"name": f"n{number}", "type": "int"} for number in range(4)] + [{"name": "last", "type": "int"}]
        workflow(http, api, "fan", [{"id": "fan", "parallel": branches}], [INT], outputs)
        event_id = http.post(f"{api}/e/fan?mode=async", json={"n": 1}, timeout=30).json()["event_id"]
        event = crash_and_resume(env, store, event_id,
                                 lambda: any(r["status"] == "completed" for r in records(store, event_id, "first")))
    assert event["status"] == "completed", event.get("error")
    assert event["outputs"] == {"n0": 2, "n1": 2, "n2": 2, "n3": 2, "last": 4}
    calls = app.config["counts"]
    assert calls[f"{event_id}:fan/first"] == 1  # completed before the kill: not called again
    assert max(calls.values()) <= 2


def test_kill_9_while_a_sleep_waits(http, env, store, counting):  # noqa: F811
    url, app = counting
    with gunicorn_api(env) as api:
        register(http, api, url, delay_s=0)
        workflow(http, api, "nap", [{"id": "before", "call": "double", "out": {"n": "m"}},
                                    {"id": "nap", "sleep": {"seconds": 3}},
                                    {"id": "after", "call": "double", "in": {"n": "m"}}], [INT], [INT])
        event_id = http.post(f"{api}/e/nap?mode=async", json={"n": 5}, timeout=30).json()["event_id"]
        event = crash_and_resume(env, store, event_id, lambda: store.get_event(event_id)["status"] == "waiting")
    assert event["status"] == "completed", event.get("error")
    assert event["outputs"] == {"n": 20}
    calls = app.config["counts"]
    assert calls[f"{event_id}:before"] == 1 and calls[f"{event_id}:after"] == 1
    nap = records(store, event_id, "nap")
    assert [record["status"] for record in nap] == ["completed"]

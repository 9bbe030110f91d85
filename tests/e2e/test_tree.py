"""Step trees over real HTTP: the API and the test services (tests/support/tree_services.py) served on
127.0.0.1, workflows registered with `steps`, events sent sync and async."""

from __future__ import annotations

import pytest
import requests

from machinery.serving import ServerThread
from tests.support.processes import wait_until
from tests.support.tree_services import tree_services

pytestmark = pytest.mark.e2e


@pytest.fixture
def config():
    return {"MONGO_URI": "mongomock://localhost/tree-e2e", "EMBEDDED_WORKERS": 2, "POLL_S": 0.05}


@pytest.fixture
def services():
    app = tree_services()
    server = ServerThread(app).start()
    yield server.url.rstrip("/"), app
    server.stop()


def register(http, api, services_url, **double_query):
    query = "&".join(f"{key}={value}" for key, value in double_query.items())
    for name, path in (("double", "/double" + (f"?{query}" if query else "")), ("accept", "/accept")):
        assert http.post(f"{api}/services", json={
            "name": name, "address": services_url + path, "retry": {"max_attempts": 1, "backoff_s": 0.1},
            "inputs": [{"name": "n", "type": "int"}], "outputs": [{"name": "n", "type": "int"}]},
            timeout=10).status_code in (200, 201)


def workflow(http, api, name, steps, inputs, outputs):
    reply = http.post(f"{api}/workflows", json={"name": name, "inputs": inputs, "outputs": outputs,
                                                "steps": steps}, timeout=10)
    assert reply.status_code in (200, 201), reply.text


INT = {"name": "n", "type": "int"}
INTS = {"name": "values", "type": {"type": "array", "items": "int"}}

NESTED = [
    {"id": "big", "if": "n > `0`", "then": [
        {"id": "fan", "parallel": {
            "items": [{"id": "each", "map": "values", "as": "v", "max_concurrency": 3,
                       "steps": [{"id": "d", "call": "double", "in": {"n": "v"}}], "collect": {"results": "n"}}],
            "one": [{"id": "single", "call": "double", "in": {"n": "n"}, "out": {"n": "doubled"}}]}}],
     "else": [{"id": "none", "call": "double", "in": {"n": "`0`"}, "out": {"n": "doubled"}}]},
]


def test_a_map_inside_a_parallel_inside_an_if_runs_sync(http, api, services):
    url, app = services
    register(http, api, url)
    workflow(http, api, "nested", NESTED, [INT, INTS],
             [{"name": "results", "type": "array", "required": False}, {"name": "doubled", "type": "int"}])
    reply = http.post(f"{api}/e/nested", json={"n": 5, "values": [1, 2, 3, 4]}, timeout=30)
    assert reply.status_code == 201, reply.text
    assert reply.json()["outputs"] == {"results": [2, 4, 6, 8], "doubled": 10}
    event_id = reply.json()["event_id"]
    shown = http.get(f"{api}/events/{event_id}", timeout=10).json()
    assert shown["progress"]["big"]["taken"] == {"then": 1}
    assert shown["progress"]["each"]["n"] == 4 and shown["progress"]["each"]["done"] == 4
    assert [step["instance"] for step in shown["steps"]] == ["big/fan/single"]  # item records are paged apart
    steps = http.get(f"{api}/events/{event_id}/steps?node=d&page_size=3", timeout=10).json()
    assert steps["total"] == 4 and len(steps["items"]) == 3
    item = http.get(f"{api}/events/{event_id}/steps?node=d&item=2", timeout=10).json()["items"]
    assert [record["instance"] for record in item] == ["big/fan/each[2]/d"] and item[0]["outputs"] == {"n": 6}
    counts = app.config["counts"]
    assert sorted(counts.values()) == [1] * 5 and f"{event_id}:big/fan/each[3]/d" in counts


def test_an_async_tree_completes_by_a_worker(http, api, services):
    url, _ = services
    register(http, api, url)
    workflow(http, api, "nested", NESTED, [INT, INTS],
             [{"name": "results", "type": "array", "required": False}, {"name": "doubled", "type": "int"}])
    reply = http.post(f"{api}/e/nested?mode=async", json={"n": -1, "values": [1]}, timeout=30)
    assert reply.status_code == 202
    event_id = reply.json()["event_id"]
    event = wait_until(lambda: (e := http.get(f"{api}/events/{event_id}", timeout=10).json())["status"]
                       in ("completed", "failed") and e, 20, message="event ended")
    assert event["status"] == "completed" and event["outputs"] == {"doubled": 0}
    assert event["progress"]["big"]["taken"] == {"else": 1}


def test_a_failed_map_item_fails_the_event_naming_its_instance(http, api, services):
    url, app = services
    register(http, api, url, fail=3)
    steps = [{"id": "each", "map": "values", "as": "v", "max_concurrency": 1,
              "steps": [{"id": "hold", "call": "double", "in": {"n": "v"}}], "collect": {"results": "n"}}]
    workflow(http, api, "reserve", steps, [INTS], [{"name": "results", "type": "array"}])
    reply = http.post(f"{api}/e/reserve", json={"values": [1, 2, 3, 4, 5]}, timeout=30)
    assert reply.status_code == 502, reply.text
    error = reply.json()["error"]
    assert error["instance"] == "each[2]/hold" and error["step"] == "hold" and error["kind"] == "http_status"
    assert len(app.config["counts"]) == 3  # items 3 and 4 never started
    failed = http.get(f"{api}/events/{reply.json()['event_id']}/steps?status=failed", timeout=10).json()
    assert [record["item"] for record in failed["items"]] == [2]


def test_a_callback_inside_a_parallel_branch_completes_the_event(http, api, services):
    url, _ = services
    register(http, api, url)
    steps = [{"id": "fan", "parallel": {
        "slow": [{"id": "later", "call": "accept", "in": {"n": "n"}, "out": {"n": "accepted"}}],
        "fast": [{"id": "now", "call": "double", "in": {"n": "n"}, "out": {"n": "doubled"}}]}}]
    workflow(http, api, "mixed", steps, [INT],
             [{"name": "accepted", "type": "int"}, {"name": "doubled", "type": "int"}])
    reply = http.post(f"{api}/e/mixed", json={"n": 4}, timeout=30)
    assert reply.status_code == 202, reply.text  # parked: the sync answer says it waits
    event_id = reply.json()["event_id"]
    event = http.get(f"{api}/events/{event_id}", timeout=10).json()
    assert event["status"] == "waiting" and event["progress"]["now"]["done"] == 1
    callback = requests.get(f"{url}/callbacks", timeout=10).json()[0]
    assert callback.startswith(api)
    bad = http.post(callback, json={"n": "four"}, timeout=10)
    assert bad.status_code == 422
    assert http.post(callback, json={"n": 40}, timeout=10).status_code == 200
    assert http.post(callback, json={"n": 41}, timeout=10).status_code == 410  # single use
    event = wait_until(lambda: (e := http.get(f"{api}/events/{event_id}", timeout=10).json())["status"]
                       == "completed" and e, 20, message="event completed after its callback")
    assert event["outputs"] == {"accepted": 40, "doubled": 8}


def test_a_sleep_parks_the_event_and_a_worker_resumes_it(http, api, services):
    url, app = services
    register(http, api, url)
    steps = [{"id": "nap", "sleep": {"seconds": 1}}, {"id": "after", "call": "double", "in": {"n": "n"}}]
    workflow(http, api, "napper", steps, [INT], [INT])
    reply = http.post(f"{api}/e/napper", json={"n": 3}, timeout=30)
    assert reply.status_code == 202 and reply.json()["status"] == "waiting"
    assert app.config["counts"] == {}
    event_id = reply.json()["event_id"]
    event = wait_until(lambda: (e := http.get(f"{api}/events/{event_id}", timeout=10).json())["status"]
                       == "completed" and e, 20, message="event completed after its sleep")
    assert event["outputs"] == {"n": 6}
    assert [(step["instance"], step["status"]) for step in event["steps"]] == [("nap", "completed"),
                                                                              ("after", "completed")]


def test_steps_of_a_version_1_event_are_paged_and_an_unknown_event_is_404(http, api, services):
    url, _ = services
    register(http, api, url)
    assert http.post(f"{api}/workflows", json={"name": "v1", "services": ["double", "double"],
                                               "inputs": [INT], "outputs": [INT]}, timeout=10).status_code == 201
    reply = http.post(f"{api}/e/v1", json={"n": 1}, timeout=30)
    assert reply.status_code == 201 and reply.json()["outputs"] == {"n": 4}
    steps = http.get(f"{api}/events/{reply.json()['event_id']}/steps?page_size=1&page=2", timeout=10).json()
    assert steps["total"] == 2 and [step["step"] for step in steps["items"]] == [1]
    assert http.get(f"{api}/events/{'0' * 24}/steps", timeout=10).status_code == 404

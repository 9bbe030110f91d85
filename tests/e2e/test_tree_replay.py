"""Retry and replay of tree events over real HTTP: a failed map item retried, one item replayed, a replay from
inside a parallel branch. Completed instances are not called again; what is redone is called with a new key."""

from __future__ import annotations

import pytest

from tests.e2e.test_tree import INT, INTS, NESTED, config, register, services, workflow  # noqa: F401
from tests.support.processes import wait_until

pytestmark = pytest.mark.e2e

MAP = [{"id": "each", "map": "values", "as": "v", "max_concurrency": 1,
        "steps": [{"id": "hold", "call": "double", "in": {"n": "v"}}], "collect": {"results": "n"}}]


def test_a_retry_reruns_the_failed_map_item_and_those_not_started_only(http, api, services):  # noqa: F811
    url, app = services
    register(http, api, url, fail=3)
    workflow(http, api, "reserve", MAP, [INTS], [{"name": "results", "type": "array"}])
    failed = http.post(f"{api}/e/reserve", json={"values": [1, 2, 3, 4, 5]}, timeout=30).json()
    assert failed["status"] == "failed" and failed["error"]["instance"] == "each[2]/hold"
    event_id = failed["event_id"]
    app.config["healed"] = True
    retried = http.post(f"{api}/events/{event_id}/retry", timeout=30)
    assert retried.status_code == 200, retried.text
    assert retried.json()["status"] == "completed" and retried.json()["outputs"] == {"results": [2, 4, 6, 8, 10]}
    counts = app.config["counts"]
    assert counts[f"{event_id}:each[0]/hold"] == 1 and counts[f"{event_id}:each[1]/hold"] == 1
    assert f"{event_id}:each[0]/hold:1" not in counts and f"{event_id}:each[1]/hold:1" not in counts
    assert counts[f"{event_id}:each[2]/hold"] == 1 and counts[f"{event_id}:each[2]/hold:1"] == 1
    assert counts[f"{event_id}:each[3]/hold:1"] == 1 and f"{event_id}:each[3]/hold" not in counts

    # One item replayed: only it is called again.
    replayed = http.post(f"{api}/events/{event_id}/retry", json={"from_step": "each", "item": 1}, timeout=30)
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["outputs"] == {"results": [2, 4, 6, 8, 10]}
    again = [key for key in counts if key.endswith(":2")]
    assert again == [f"{event_id}:each[1]/hold:2"]
    shown = http.get(f"{api}/events/{event_id}", timeout=10).json()
    assert [(entry["run"], entry["from_step"], entry["item"]) for entry in shown["runs"]] == [
        (1, None, None), (2, "each", 1)]


def test_a_replay_from_inside_a_branch_redoes_it_and_not_the_other_branch(http, api, services):  # noqa: F811
    url, app = services
    register(http, api, url)
    workflow(http, api, "nested", NESTED, [INT, INTS],
             [{"name": "results", "type": "array", "required": False}, {"name": "doubled", "type": "int"}])
    first = http.post(f"{api}/e/nested", json={"n": 5, "values": [1, 2]}, timeout=30).json()
    event_id = first["event_id"]
    replayed = http.post(f"{api}/events/{event_id}/retry", json={"from_step": "single", "context": {"n": 7}},
                         timeout=30)
    assert replayed.status_code == 200, replayed.text
    assert replayed.json()["outputs"] == {"results": [2, 4], "doubled": 14}
    counts = app.config["counts"]
    assert counts[f"{event_id}:big/fan/single:1"] == 1
    assert not any(key.startswith(f"{event_id}:big/fan/each") and key.endswith(":1") for key in counts)


def test_a_replay_names_what_it_cannot_take(http, api, services):  # noqa: F811
    url, _ = services
    register(http, api, url)
    workflow(http, api, "reserve", MAP, [INTS], [{"name": "results", "type": "array"}])
    event_id = http.post(f"{api}/e/reserve", json={"values": [1]}, timeout=30).json()["event_id"]
    unknown = http.post(f"{api}/events/{event_id}/retry", json={"from_step": "nope"}, timeout=10)
    assert unknown.status_code == 422 and "'nope' is not a step" in unknown.json()["message"]
    not_a_map = http.post(f"{api}/events/{event_id}/retry", json={"from_step": "hold", "item": 0}, timeout=10)
    assert not_a_map.status_code == 422 and "not a map" in not_a_map.json()["message"]
    wrong = http.post(f"{api}/events/{event_id}/retry", json={"from_step": "each", "context": {"values": "x"}},
                      timeout=10)
    assert wrong.status_code == 422 and "values" in wrong.json()["message"]
    completed = http.post(f"{api}/events/{event_id}/retry", timeout=10)
    assert completed.status_code == 409


def test_a_child_workflow_runs_as_its_own_event_linked_both_ways(http, api, services):  # noqa: F811
    url, _ = services
    register(http, api, url)
    workflow(http, api, "double-one", [{"id": "d", "call": "double"}], [INT], [INT])
    workflow(http, api, "parent", [{"id": "kid", "workflow": "double-one", "out": {"n": "doubled"}},
                                   {"id": "again", "call": "double", "in": {"n": "doubled"}}],
             [INT], [INT, {"name": "doubled", "type": "int"}])
    reply = http.post(f"{api}/e/parent?mode=async", json={"n": 3}, timeout=30)
    assert reply.status_code == 202
    event_id = reply.json()["event_id"]
    event = wait_until(lambda: (e := http.get(f"{api}/events/{event_id}", timeout=10).json())["status"]
                       in ("completed", "failed") and e, 30, message="the parent ended")
    assert event["status"] == "completed", event.get("error")
    assert event["outputs"] == {"n": 12, "doubled": 6}
    kid = next(record for record in event["steps"] if record["instance"] == "kid")
    child = http.get(f"{api}/events/{kid['child_event_id']}", timeout=10).json()
    assert child["workflow"] == "double-one" and child["outputs"] == {"n": 6}
    assert child["parent"]["event_id"] == event_id and child["parent"]["instance"] == "kid"


def test_a_cycle_through_child_workflows_is_refused(http, api, services):  # noqa: F811
    url, _ = services
    register(http, api, url)
    workflow(http, api, "leaf", [{"id": "d", "call": "double"}], [INT], [INT])
    workflow(http, api, "middle", [{"id": "down", "workflow": "leaf"}], [INT], [INT])
    looped = http.post(f"{api}/workflows", json={"name": "leaf", "inputs": [INT], "outputs": [INT],
                                                 "steps": [{"id": "up", "workflow": "middle"}]}, timeout=10)
    assert looped.status_code in (409, 422), looped.text
    assert "cycle" in looped.text

"""Registering a poll step: its condition is typed over the polled service's outputs, its numbers are
bounded, and each refusal is a 422 naming the path with the store unchanged."""

from __future__ import annotations

import pytest

JOB = {"name": "job_id", "type": "string"}
STATE = {"name": "state", "type": "string", "enum": ["queued", "running", "done", "failed"]}
PROGRESS = {"name": "progress", "type": "float", "required": False}


@pytest.fixture
def services(client):
    for service in (
        {"name": "job-status", "address": "http://jobs.local/", "inputs": [JOB], "outputs": [STATE, PROGRESS],
         "request": {"method": "GET", "path": "/jobs/{job_id}"}},
        {"name": "double", "address": "http://double.local/", "inputs": [{"name": "n", "type": "int"}],
         "outputs": [{"name": "n", "type": "int"}]},
    ):
        assert client.post("/services", json=service).status_code == 201
    return client


def workflow(step, outputs=({"name": "job_state", "type": "string"},)):
    return {"name": "waiter", "inputs": [JOB], "outputs": list(outputs), "steps": [
        {"id": "wait", "poll": "job-status", "out": {"state": "job_state"}, **step}]}


def test_a_poll_step_registers_and_its_plan_holds_its_numbers(services):
    reply = services.post("/workflows", json=workflow({"until": "state == 'done' || state == 'failed'",
                                                       "interval_s": 0.5, "backoff": 2, "max_interval_s": 4,
                                                       "timeout_s": 60}))
    assert reply.status_code == 201, reply.get_json()
    assert reply.get_json()["services"] == ["job-status"]
    node = services.post("/workflows/check", json=workflow({"until": "state == 'done'"})).get_json()["plan"]["tree"][0]
    assert node == {"id": "wait", "kind": "poll", "service": "job-status", "in": {"job_id": "job_id"},
                    "out": {"state": "job_state", "progress": "progress"}, "until": "state == 'done'",
                    "interval_s": 5.0, "backoff": 1.0, "timeout_s": 3600.0}


@pytest.mark.parametrize("step, path, words", [
    ({}, "wait.until", "a poll step needs until"),
    ({"until": "state"}, "wait.until", "not bool"),
    ({"until": "status == 'done'"}, "wait.until", "no field 'status'"),
    ({"until": "job_id == 'x'"}, "wait.until", "no field 'job_id'"),  # over the outputs, not the context
    ({"until": "state > `3`"}, "wait.until", ""),
    ({"until": "state == 'done'", "interval_s": 0}, "wait.interval_s", "from 0.1 to 86400"),
    ({"until": "state == 'done'", "backoff": 0.5}, "wait.backoff", "from 1 to 10"),
    ({"until": "state == 'done'", "timeout_s": "soon"}, "wait.timeout_s", "must be a number"),
    ({"until": "state == 'done'", "interval_s": 10, "max_interval_s": 2}, "wait.max_interval_s", "at least"),
    ({"until": "state == 'done'", "every": 3}, "wait.every", "does not take 'every'"),
    ({"until": "state == 'done'", "in": {"job": "job_id"}}, "wait.in.job", "has no input 'job'"),
])
def test_each_bad_poll_is_a_422_naming_the_path(services, store, step, path, words):
    before = store.list_workflows(1, 10)[1]
    reply = services.post("/workflows", json=workflow(step))
    assert reply.status_code == 422, reply.get_json()
    body = reply.get_json()
    shown = str(body["errors"]) + body["message"]
    assert path in shown and words in shown, body
    assert store.list_workflows(1, 10)[1] == before


def test_a_poll_of_an_unknown_service_is_refused(services):
    reply = services.post("/workflows", json={**workflow({"until": "state == 'done'"}), "steps": [
        {"id": "wait", "poll": "nobody", "until": "state == 'done'"}]})
    assert reply.status_code == 422 and "service 'nobody' is not registered" in reply.get_json()["message"]


def test_what_a_poll_writes_is_typed_as_the_service_outputs(services):
    """The poll's outputs feed later steps with their declared types, as a call's do."""
    steps = [{"id": "wait", "poll": "job-status", "until": "state == 'done'"},
             {"id": "use", "call": "double", "in": {"n": "state"}}]
    reply = services.post("/workflows", json={"name": "typed", "inputs": [JOB], "outputs": [], "steps": steps})
    assert reply.status_code == 422
    assert "use.in.n" in str(reply.get_json()["errors"])


def test_a_poll_is_drawn_with_its_service_call_and_condition(services):
    assert services.post("/workflows", json=workflow({"until": "state == 'done'", "interval_s": 2})).status_code == 201
    for query in ("", "?format=mermaid", "?format=dot"):
        drawn = services.get(f"/workflows/waiter/graph{query}").get_data(as_text=True)
        assert "wait: poll job-status" in drawn and "GET /jobs/" in drawn, query
        assert "every 2 s" in drawn, query

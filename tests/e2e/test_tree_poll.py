"""A poll step over a real job API on 127.0.0.1: called until its condition holds, waiting in the store
between calls (the event parked, no thread held), one record for all the polls, and a timeout."""

from __future__ import annotations

import pytest
import requests

from machinery.serving import ServerThread
from tests.support.jobs import job_service
from tests.support.processes import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def config():
    return {"MONGO_URI": "mongomock://localhost/poll-e2e", "EMBEDDED_WORKERS": 2, "POLL_S": 0.05}


@pytest.fixture
def jobs(http, api):
    server = ServerThread(job_service()).start()
    url = server.url.rstrip("/")
    for service in (
        {"name": "job-submit", "address": url, "request": {"method": "POST", "path": "/jobs"},
         "inputs": [{"name": "work", "type": "string"}, {"name": "polls_needed", "type": "int"}],
         "outputs": [{"name": "job_id", "type": "string"}]},
        {"name": "job-status", "address": url, "request": {"method": "GET", "path": "/jobs/{job_id}"},
         "retry": {"max_attempts": 1, "backoff_s": 0.1},
         "inputs": [{"name": "job_id", "type": "string"}],
         "outputs": [{"name": "state", "type": "string", "enum": ["running", "done"]},
                     {"name": "progress", "type": "float"},
                     {"name": "result", "type": "string", "required": False}]},
    ):
        assert http.post(f"{api}/services", json=service, timeout=10).status_code == 201
    yield url
    server.stop()


def register(http, api, **poll):
    steps = [{"id": "submit", "call": "job-submit"},
             {"id": "wait", "poll": "job-status", "until": "state == 'done'", "out": {"result": "result"}, **poll}]
    reply = http.post(f"{api}/workflows", json={
        "name": "job", "steps": steps, "outputs": [{"name": "result", "type": "string", "required": False}],
        "inputs": [{"name": "work", "type": "string"}, {"name": "polls_needed", "type": "int"}]}, timeout=10)
    assert reply.status_code == 201, reply.text


def test_a_poll_calls_until_its_condition_holds_and_waits_in_the_store_between_calls(http, api, jobs):
    register(http, api, interval_s=0.3, backoff=2, timeout_s=60)
    reply = http.post(f"{api}/e/job", json={"work": "crunch", "polls_needed": 3}, timeout=30)
    assert reply.status_code == 202, reply.text  # a sync event that waits answers at once, as a sleep's does
    event_id = reply.json()["event_id"]
    # The 202 comes once the event is parked, and the next poll is at least 0.3 s away.
    parked = http.get(f"{api}/events/{event_id}", timeout=10).json()
    assert parked["status"] == "waiting" and parked["progress"]["wait"]["waiting"] == 1, parked
    event = wait_until(lambda: (e := http.get(f"{api}/events/{event_id}", timeout=10).json())["status"]
                       in ("completed", "failed") and e, 30, message="the event finished")
    assert event["status"] == "completed", event
    assert event["outputs"] == {"result": "CRUNCH"}
    records = http.get(f"{api}/events/{event_id}/steps?node=wait", timeout=10).json()["items"]
    assert len(records) == 1  # one record for all the polls
    record = records[0]
    assert record["status"] == "completed" and record["polls"] == 3
    assert record["outputs"]["state"] == "done" and record["last_outputs"]["result"] == "CRUNCH"
    asked = requests.get(f"{jobs}/jobs/job-1/asked", timeout=10).json()
    assert len(asked) == 3  # called exactly until it held
    gaps = [later - earlier for earlier, later in zip(asked, asked[1:], strict=False)]
    # At least the interval, then twice it: each wait is the store's deadline, never shorter.
    assert gaps[0] >= 0.3 - 0.02 and gaps[1] >= 0.6 - 0.02, gaps


def test_a_poll_whose_condition_never_holds_fails_at_its_timeout_with_the_last_reply(http, api, jobs):
    register(http, api, interval_s=0.2, timeout_s=1)
    reply = http.post(f"{api}/e/job?mode=async", json={"work": "never", "polls_needed": 10_000}, timeout=30)
    event_id = reply.json()["event_id"]
    event = wait_until(lambda: (e := http.get(f"{api}/events/{event_id}", timeout=10).json())["status"]
                       in ("completed", "failed") and e, 30, message="the event finished")
    assert event["status"] == "failed" and event["error"]["kind"] == "poll_timeout", event
    assert event["error"]["step"] == "wait" and "did not hold within 1 s" in event["error"]["message"]
    record = http.get(f"{api}/events/{event_id}/steps?node=wait", timeout=10).json()["items"][0]
    assert record["status"] == "failed" and record["polls"] >= 2
    assert record["last_outputs"]["state"] == "running"
    assert len(requests.get(f"{jobs}/jobs/job-1/asked", timeout=10).json()) == record["polls"]


def test_a_poll_whose_call_fails_fails_the_event_as_a_call_would(http, api, jobs):
    http.post(f"{api}/services", json={
        "name": "job-submit", "address": jobs, "request": {"method": "POST", "path": "/nowhere"},
        "retry": {"max_attempts": 1, "backoff_s": 0.1},
        "inputs": [{"name": "work", "type": "string"}], "outputs": []}, timeout=10)
    steps = [{"id": "wait", "poll": "job-status", "in": {"job_id": "'job-404'"}, "until": "state == 'done'",
              "interval_s": 0.2}]
    assert http.post(f"{api}/workflows", json={"name": "lost", "steps": steps, "inputs": [], "outputs": []},
                     timeout=10).status_code == 201
    reply = http.post(f"{api}/e/lost", json={}, timeout=30)
    assert reply.status_code == 502, reply.text
    error = reply.json()["error"]
    assert error["kind"] == "http_status" and error["step"] == "wait" and "404" in error["message"]

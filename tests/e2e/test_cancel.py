"""Cancel and pause over real HTTP: the API and a slow test service that records when each call starts,
served on 127.0.0.1; version 1 chains and step trees; events run by the API's own workers."""

from __future__ import annotations

import threading
import time

import pytest
import requests
from flask import Flask, jsonify, request

from machinery.serving import ServerThread
from tests.support.processes import wait_until

pytestmark = pytest.mark.e2e

INT = {"name": "n", "type": "int"}
INTS = {"name": "values", "type": {"type": "array", "items": "int"}}


@pytest.fixture
def config():
    return {"MONGO_URI": "mongomock://localhost/cancel-e2e", "EMBEDDED_WORKERS": 2, "POLL_S": 0.05}


def slow_service() -> Flask:
    """POST /slow {"n"} sleeps ?delay= s and answers {"n"}; each call's start (time.time()) and n are
    kept, in the order they came (GET /starts). POST /accept answers 202 and keeps its callback URL."""
    app = Flask("slow")
    starts: list[tuple[float, int]] = []
    callbacks: list[str] = []
    lock = threading.Lock()

    @app.post("/slow")
    def slow():
        body = request.get_json()
        with lock:
            starts.append((time.time(), body["n"]))
        time.sleep(float(request.args.get("delay", 0)))
        return jsonify(n=body["n"])

    @app.post("/accept")
    def accept():
        with lock:
            callbacks.append(request.headers.get("X-Machinery-Callback", ""))
        return "", 202

    @app.get("/starts")
    def listed():
        with lock:
            return jsonify(list(starts))

    @app.get("/callbacks")
    def called_back():
        with lock:
            return jsonify(list(callbacks))

    return app


@pytest.fixture
def service():
    server = ServerThread(slow_service()).start()
    yield server.url.rstrip("/")
    server.stop()


def register(http, api, url, delay=0.0):
    for name, path in (("slow", f"/slow?delay={delay}"), ("accept", "/accept")):
        reply = http.post(f"{api}/services", json={
            "name": name, "address": url + path, "retry": {"max_attempts": 1, "backoff_s": 0.1},
            "inputs": [INT], "outputs": [INT]}, timeout=10)
        assert reply.status_code in (200, 201), reply.text


def tree(http, api, name, steps, inputs=(INT,), outputs=()):
    reply = http.post(f"{api}/workflows", json={"name": name, "inputs": list(inputs), "outputs": list(outputs),
                                                "steps": steps}, timeout=10)
    assert reply.status_code in (200, 201), reply.text


def chain(http, api, name, services):
    reply = http.post(f"{api}/workflows", json={"name": name, "services": services, "inputs": [INT],
                                                "outputs": [INT]}, timeout=10)
    assert reply.status_code in (200, 201), reply.text


def event(http, api, event_id):
    return http.get(f"{api}/events/{event_id}", timeout=10).json()


def step_records(http, api, event_id):
    records, page = [], 1
    while True:
        reply = http.get(f"{api}/events/{event_id}/steps", params={"page": page, "page_size": 100}, timeout=10).json()
        records += reply["items"]
        if page * 100 >= reply["total"]:
            return records
        page += 1


def test_cancel_during_a_map_starts_no_item_after_it_and_records_what_ran(http, api, service):
    register(http, api, service, delay=0.1)
    tree(http, api, "many", [{"id": "each", "map": "values", "as": "v", "max_concurrency": 2,
                              "steps": [{"id": "one", "call": "slow", "in": {"n": "v"}}]}], inputs=[INTS])
    sent = http.post(f"{api}/e/many?mode=async", json={"values": list(range(200))}, timeout=10).json()
    wait_until(lambda: len(http.get(f"{service}/starts", timeout=5).json()) >= 6, 20, message="six items started")

    cancelled = http.post(f"{api}/events/{sent['event_id']}/cancel", json={"reason": "runaway"}, timeout=10)
    answered = time.time()

    assert cancelled.status_code == 200, cancelled.text
    body = cancelled.json()
    assert body["status"] == "cancelled"
    assert body["cancelled"]["by"] == "anonymous" and body["cancelled"]["reason"] == "runaway"
    assert body["cancelled"]["previous_status"] == "running"
    # The items in flight finish and are recorded; the holder lets the event go.
    assert body["cancelled"]["in_flight"] is True
    wait_until(lambda: event(http, api, sent["event_id"])["cancelled"]["in_flight"] is False, 20, message="settled")
    time.sleep(0.5)  # any item that would still start would have by now
    starts = http.get(f"{service}/starts", timeout=5).json()
    assert [n for at, n in starts if at > answered] == []
    assert len(starts) < 200
    records = step_records(http, api, sent["event_id"])
    assert sorted(record["item"] for record in records) == sorted(n for _, n in starts)
    assert all(record["status"] == "completed" for record in records)
    final = event(http, api, sent["event_id"])
    assert final["status"] == "cancelled" and final["outputs"] is None
    assert final["progress"]["each"]["done"] == len(starts)


def test_a_cancelled_map_retried_runs_only_the_items_that_had_not_run(http, api, service):
    register(http, api, service, delay=0.1)
    tree(http, api, "some", [{"id": "each", "map": "values", "as": "v", "max_concurrency": 2,
                              "steps": [{"id": "one", "call": "slow", "in": {"n": "v"}}], "collect": {"got": "n"}}],
         inputs=[INTS], outputs=[{"name": "got", "type": {"type": "array", "items": "int"}}])
    sent = http.post(f"{api}/e/some?mode=async", json={"values": list(range(20))}, timeout=10).json()
    wait_until(lambda: len(http.get(f"{service}/starts", timeout=5).json()) >= 4, 20, message="items started")
    http.post(f"{api}/events/{sent['event_id']}/cancel", timeout=10)
    wait_until(lambda: event(http, api, sent["event_id"])["cancelled"]["in_flight"] is False, 20, message="settled")
    ran = len(http.get(f"{service}/starts", timeout=5).json())

    retried = http.post(f"{api}/events/{sent['event_id']}/retry", timeout=30)

    assert retried.status_code == 200 and retried.json()["status"] == "completed"
    assert retried.json()["outputs"] == {"got": list(range(20))}
    called = sorted(n for _, n in http.get(f"{service}/starts", timeout=5).json())
    assert called == list(range(20)) and ran < 20  # each item called once: the ones that ran are not again


def test_cancel_of_a_waiting_callback_revokes_its_url(http, api, service):
    register(http, api, service)
    tree(http, api, "waits", [{"id": "ask", "call": "accept", "in": {"n": "n"}, "out": {"n": "n"}}],
         outputs=[INT])
    sent = http.post(f"{api}/e/waits", json={"n": 1}, timeout=10)
    assert sent.status_code == 202 and sent.json()["status"] == "waiting"
    url = http.get(f"{service}/callbacks", timeout=5).json()[0]

    cancelled = http.post(f"{api}/events/{sent.json()['event_id']}/cancel", timeout=10)

    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    late = http.post(url, json={"n": 2}, timeout=10)
    assert late.status_code == 410 and "cancelled" in late.json()["message"]
    final = event(http, api, sent.json()["event_id"])
    assert final["status"] == "cancelled" and final["cancelled"]["previous_status"] == "waiting"
    assert [record["status"] for record in final["steps"]] == ["cancelled"]


def test_cancel_of_a_waiting_v1_callback_revokes_its_url(http, api, service):
    register(http, api, service)
    chain(http, api, "waits-v1", ["accept"])
    sent = http.post(f"{api}/e/waits-v1", json={"n": 1}, timeout=10).json()
    assert sent["status"] == "waiting"
    url = http.get(f"{service}/callbacks", timeout=5).json()[0]

    assert http.post(f"{api}/events/{sent['event_id']}/cancel", timeout=10).status_code == 200

    assert http.post(url, json={"n": 2}, timeout=10).status_code == 410
    final = event(http, api, sent["event_id"])
    assert final["status"] == "cancelled" and final.get("waiting") is None
    assert [step["status"] for step in final["steps"]] == ["cancelled"]


def test_cancel_of_a_sleeping_event_drops_its_timer(http, api, service):
    register(http, api, service)
    tree(http, api, "naps", [{"id": "nap", "sleep": {"seconds": 1}},
                             {"id": "after", "call": "slow", "in": {"n": "n"}}])
    sent = http.post(f"{api}/e/naps", json={"n": 7}, timeout=10).json()
    assert sent["status"] == "waiting"

    cancelled = http.post(f"{api}/events/{sent['event_id']}/cancel", timeout=10).json()

    assert cancelled["status"] == "cancelled"
    time.sleep(1.6)  # past the timer: no worker resumes it
    final = event(http, api, sent["event_id"])
    assert final["status"] == "cancelled"
    assert [record["status"] for record in final["steps"]] == ["cancelled"]
    assert http.get(f"{service}/starts", timeout=5).json() == []


def test_cancel_of_a_waiting_poll_drops_its_next_call(http, api, service):
    register(http, api, service)
    tree(http, api, "polls", [{"id": "wait", "poll": "slow", "in": {"n": "n"}, "until": "n == `99`",
                               "interval_s": 1, "timeout_s": 60}])
    sent = http.post(f"{api}/e/polls", json={"n": 1}, timeout=10).json()
    assert sent["status"] == "waiting"

    assert http.post(f"{api}/events/{sent['event_id']}/cancel", timeout=10).status_code == 200

    time.sleep(1.6)  # past the next poll: no worker calls again
    assert len(http.get(f"{service}/starts", timeout=5).json()) == 1
    final = event(http, api, sent["event_id"])
    assert final["status"] == "cancelled" and [record["status"] for record in final["steps"]] == ["cancelled"]
    assert final["steps"][0]["polls"] == 1


def test_cancel_of_a_parent_cancels_its_child_event(http, api, service):
    register(http, api, service)
    tree(http, api, "child", [{"id": "ask", "call": "accept", "in": {"n": "n"}}])
    tree(http, api, "parent", [{"id": "sub", "workflow": "child", "in": {"n": "n"}}])
    sent = http.post(f"{api}/e/parent", json={"n": 1}, timeout=10).json()
    child_id = wait_until(lambda: next((record.get("child_event_id") for record in
                                        event(http, api, sent["event_id"])["steps"]), None), 10, message="child")
    wait_until(lambda: event(http, api, child_id)["status"] == "waiting", 10, message="child waiting")

    assert http.post(f"{api}/events/{sent['event_id']}/cancel", timeout=10).status_code == 200

    child = event(http, api, child_id)
    assert child["status"] == "cancelled"
    assert "parent event" in child["cancelled"]["reason"]


def test_a_child_cancelled_on_its_own_fails_its_parents_step(http, api, service):
    register(http, api, service)
    tree(http, api, "child", [{"id": "ask", "call": "accept", "in": {"n": "n"}}])
    tree(http, api, "parent", [{"id": "sub", "workflow": "child", "in": {"n": "n"}}])
    sent = http.post(f"{api}/e/parent", json={"n": 1}, timeout=10).json()
    child_id = wait_until(lambda: next((record.get("child_event_id") for record in
                                        event(http, api, sent["event_id"])["steps"]), None), 10, message="child")
    wait_until(lambda: event(http, api, child_id)["status"] == "waiting", 10, message="child waiting")

    assert http.post(f"{api}/events/{child_id}/cancel", timeout=10).status_code == 200

    parent = wait_until(lambda: (e := event(http, api, sent["event_id"]))["status"] == "failed" and e, 10,
                        message="the parent failed")
    assert parent["error"]["kind"] == "cancelled" and child_id in parent["error"]["message"]


def test_a_v1_chain_cancelled_while_it_runs_stops_after_the_step_in_flight(http, api, service):
    register(http, api, service, delay=0.4)
    chain(http, api, "three", ["slow", "slow", "slow"])
    sent = http.post(f"{api}/e/three?mode=async", json={"n": 3}, timeout=10).json()
    wait_until(lambda: http.get(f"{service}/starts", timeout=5).json(), 10, message="first step started")

    assert http.post(f"{api}/events/{sent['event_id']}/cancel", timeout=10).json()["status"] == "cancelled"

    final = wait_until(lambda: (e := event(http, api, sent["event_id"]))["cancelled"]["in_flight"] is False and e,
                       10, message="settled")
    assert final["status"] == "cancelled" and final["next_step"] == 1
    assert [step["status"] for step in final["steps"]] == ["completed"]
    time.sleep(0.6)
    assert len(http.get(f"{service}/starts", timeout=5).json()) == 1


def test_a_sync_caller_waiting_on_a_cancelled_event_gets_it(http, api, service):
    register(http, api, service, delay=0.5)
    chain(http, api, "slow-sync", ["slow", "slow"])
    answer: dict = {}
    caller = threading.Thread(target=lambda: answer.update(
        reply=requests.post(f"{api}/e/slow-sync", json={"n": 1}, timeout=20)))
    caller.start()
    wait_until(lambda: http.get(f"{service}/starts", timeout=5).json(), 10, message="first step started")
    listed = http.get(f"{api}/events", params={"workflow": "slow-sync"}, timeout=10).json()["items"]

    http.post(f"{api}/events/{listed[0]['event_id']}/cancel", timeout=10)
    caller.join(20)

    assert answer["reply"].status_code == 200
    assert answer["reply"].json()["status"] == "cancelled"


def test_a_cancelled_event_can_be_retried_from_where_it_stopped(http, api, service):
    register(http, api, service, delay=0.3)
    chain(http, api, "again", ["slow", "slow"])
    sent = http.post(f"{api}/e/again?mode=async", json={"n": 5}, timeout=10).json()
    wait_until(lambda: http.get(f"{service}/starts", timeout=5).json(), 10, message="first step started")
    http.post(f"{api}/events/{sent['event_id']}/cancel", timeout=10)
    wait_until(lambda: event(http, api, sent["event_id"])["cancelled"]["in_flight"] is False, 10, message="settled")

    retried = http.post(f"{api}/events/{sent['event_id']}/retry", timeout=20)

    assert retried.status_code == 200 and retried.json()["status"] == "completed"
    final = event(http, api, sent["event_id"])
    assert final["cancelled"] is None and final["runs"][0]["previous_status"] == "cancelled"
    assert final["runs"][0]["cancelled"]["by"] == "anonymous"
    assert len(http.get(f"{service}/starts", timeout=5).json()) == 2  # the first step is not called again


def test_pause_holds_new_events_and_resume_runs_them_in_order(http, api, service):
    register(http, api, service)
    chain(http, api, "held", ["slow"])
    paused = http.post(f"{api}/workflows/held/pause", timeout=10)
    assert paused.status_code == 200 and paused.json()["paused"]["by"] == "anonymous"

    sent = []
    for n in range(5):
        reply = http.post(f"{api}/e/held", json={"n": n}, timeout=10)  # sync: answered at once, pending
        assert reply.status_code == 202 and reply.json()["status"] == "pending" and reply.json()["held"] == "paused"
        sent.append(reply.json()["event_id"])
    time.sleep(0.5)
    assert [event(http, api, event_id)["status"] for event_id in sent] == ["pending"] * 5
    assert http.get(f"{service}/starts", timeout=5).json() == []
    assert http.get(f"{api}/workflows/held", timeout=10).json()["paused"] is not None

    resumed = http.post(f"{api}/workflows/held/resume", timeout=10)

    assert resumed.status_code == 200 and resumed.json()["events_released"] == 5
    assert resumed.json()["paused"] is None
    wait_until(lambda: all(event(http, api, event_id)["status"] == "completed" for event_id in sent), 20,
               message="all five completed")
    claimed = [event(http, api, event_id)["claims"][0]["at"] for event_id in sent]
    assert claimed == sorted(claimed)  # started in the order they came


def test_pause_holds_events_already_queued(http, api, service):
    register(http, api, service)
    chain(http, api, "queued", ["slow"])
    http.post(f"{api}/workflows/queued/pause", timeout=10)
    first = http.post(f"{api}/e/queued?mode=async", json={"n": 1}, timeout=10).json()
    time.sleep(0.3)
    assert event(http, api, first["event_id"])["status"] == "pending"
    http.post(f"{api}/workflows/queued/resume", timeout=10)
    wait_until(lambda: event(http, api, first["event_id"])["status"] == "completed", 10, message="completed")


@pytest.mark.parametrize("path, code, names", [
    ("/events/6b11000000000000000000aa/cancel", 404, "6b11000000000000000000aa"),
    ("/events/not-an-id/cancel", 404, "not-an-id"),
    ("/workflows/ghost/pause", 404, "ghost"),
    ("/workflows/ghost/resume", 404, "ghost"),
])
def test_unknown_ids_are_404_naming_them(http, api, path, code, names):
    reply = http.post(f"{api}{path}", timeout=10)
    assert reply.status_code == code and names in reply.json()["message"]


def test_bad_input_is_refused_and_changes_nothing(http, api, service):
    register(http, api, service)
    chain(http, api, "once", ["slow"])
    done = http.post(f"{api}/e/once", json={"n": 1}, timeout=10).json()
    before = event(http, api, done["event_id"])

    again = http.post(f"{api}/events/{done['event_id']}/cancel", timeout=10)
    too_long = http.post(f"{api}/events/{done['event_id']}/cancel", json={"reason": "x" * 501}, timeout=10)
    not_json = http.post(f"{api}/events/{done['event_id']}/cancel", data="{", timeout=10,
                         headers={"Content-Type": "application/json"})
    resumed = http.post(f"{api}/workflows/once/resume", timeout=10)

    assert again.status_code == 409 and "completed" in again.json()["message"]
    assert too_long.status_code == 422 and "reason" in too_long.json()["errors"]
    assert not_json.status_code == 400
    assert resumed.status_code == 409 and "not paused" in resumed.json()["message"]
    assert event(http, api, done["event_id"]) == before
    assert http.get(f"{api}/workflows/once", timeout=10).json()["paused"] is None


def test_cancel_twice_is_409_naming_the_status(http, api, service):
    register(http, api, service)
    chain(http, api, "twice", ["accept"])
    sent = http.post(f"{api}/e/twice", json={"n": 1}, timeout=10).json()
    assert http.post(f"{api}/events/{sent['event_id']}/cancel", timeout=10).status_code == 200
    before = event(http, api, sent["event_id"])

    second = http.post(f"{api}/events/{sent['event_id']}/cancel", timeout=10)

    assert second.status_code == 409 and "is cancelled" in second.json()["message"]
    assert event(http, api, sent["event_id"]) == before

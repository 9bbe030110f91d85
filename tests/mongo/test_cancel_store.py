"""The store writes of cancel and pause, the same on the embedded store, over the wire and on a real
MongoDB: holding and releasing a paused workflow's events in arrival order, pausing once, ending an
event's waiting step records, and reading an event's status alone."""

from __future__ import annotations

from datetime import timedelta

from bson import ObjectId

from machinery.store import EPOCH, HELD, utcnow


def new_event(store, when, workflow_id="w1", status="pending", claim_count=0) -> str:
    event, _ = store.insert_event({"_id": ObjectId(), "workflow_id": workflow_id, "status": status, "ack_date": when,
                                   "lease_expires": EPOCH, "lease_owner": None, "claim_count": claim_count,
                                   "data": {}})
    return event["event_id"]


def test_held_events_are_not_claimed_and_are_released_in_arrival_order(store):
    # GIVEN five pending events of w1, stored in an order their arrival dates do not follow, and one of w2
    start = utcnow() - timedelta(minutes=5)
    ids = {n: new_event(store, start + timedelta(seconds=n)) for n in (3, 0, 4, 1, 2)}
    other = new_event(store, start, workflow_id="w2")

    # WHEN w1's events are held
    held = store.hold_events("w1")

    # THEN no claim takes them, w2's is taken, and each is released in the order it came
    assert held == 5
    assert store.claim_event("tester", 30)["event_id"] == other
    assert store.claim_event("tester", 30) is None
    assert store.get_event(ids[0])["lease_expires"].replace(tzinfo=None) == HELD
    assert store.release_events("w1") == 5
    assert [store.claim_event("tester", 30)["event_id"] for _ in range(5)] == [ids[n] for n in range(5)]


def test_hold_leaves_alone_what_has_started(store):
    # GIVEN an event claimed once (it started, then was given back) and a running one
    started = new_event(store, utcnow(), claim_count=1)
    running = new_event(store, utcnow(), status="running", claim_count=1)

    assert store.hold_events("w1") == 0
    assert store.get_event(started).get("held") is None and store.get_event(running).get("held") is None


def test_a_workflow_is_paused_once_and_resumed_once(store):
    workflow, _ = store.put_workflow({"name": "flow", "services": []})
    paused = {"by": "ops", "at": utcnow()}

    assert store.set_workflow_paused(workflow["workflow_id"], paused, expect_paused=False) is True
    assert store.set_workflow_paused(workflow["workflow_id"], paused, expect_paused=False) is False
    assert store.get_workflow("flow")["paused"]["by"] == "ops"
    assert store.set_workflow_paused(workflow["workflow_id"], None, expect_paused=True) is True
    assert store.set_workflow_paused(workflow["workflow_id"], None, expect_paused=True) is False
    assert store.get_workflow("flow")["paused"] is None


def test_cancel_step_runs_ends_only_the_waiting_records_of_the_event(store):
    base = {"run": 0, "node": "n", "kind": "call", "items": [], "item": None, "started_at": utcnow()}
    store.insert_step_run({**base, "event_id": "e1", "instance": "a", "status": "waiting", "token_hash": "t1"})
    store.insert_step_run({**base, "event_id": "e1", "instance": "b", "status": "completed"})
    store.insert_step_run({**base, "event_id": "e2", "instance": "a", "status": "waiting"})

    ended = store.cancel_step_runs("e1", {"status": "cancelled"})

    assert [record["instance"] for record in ended] == ["a"]
    assert {record["instance"]: record["status"] for record in store.step_runs_of("e1")} == {
        "a": "cancelled", "b": "completed"}
    assert store.find_step_run_by_token("t1")["status"] == "cancelled"
    assert store.step_runs_of("e2")[0]["status"] == "waiting"


def test_event_status_reads_the_status_alone(store):
    event_id = new_event(store, utcnow(), status="waiting")
    assert store.event_status(event_id) == "waiting"
    assert store.event_status(str(ObjectId())) is None
    assert store.event_status("not-an-id") is None

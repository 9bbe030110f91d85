"""The tree runtime against a fake transport: each kind, contexts, collect order, failures that stop
what has not started, resuming from records, waits that park, and values checked at run time."""

from __future__ import annotations

import json
import threading
from datetime import timedelta
from email.message import Message

import pytest

from machinery.config import load_config
from machinery.runtime import tree
from machinery.runtime.executor import Executor
from machinery.store import EPOCH, Store, utcnow

OWNER = "test-owner"


class FakeReply:
    def __init__(self, status, body):
        self.status = status
        self.headers = Message()
        self.content = json.dumps(body).encode() if body is not None else b""

    def read(self, cap):
        return self.content[:cap + 1]

    def close(self):
        pass


class Services:
    """Answers each POST by the service its host names, with that service's handler; thread-safe."""

    def __init__(self, **handlers):
        self.handlers = handlers
        self.calls = []
        self.lock = threading.Lock()

    def post(self, url, body, headers, connect_timeout, read_timeout):
        name = url.split("//", 1)[1].split(".", 1)[0]
        payload = json.loads(body)
        with self.lock:
            self.calls.append({"service": name, "body": payload, "headers": dict(headers)})
        status, reply = self.handlers[name](payload, headers)
        return FakeReply(status, reply)

    def of(self, name):
        return [call for call in self.calls if call["service"] == name]


def service(name, inputs, outputs):
    return {"name": name, "address": f"http://{name}.test/", "retry": {"max_attempts": 1, "backoff_s": 0},
            "inputs": [{"name": k, "type": t} for k, t in inputs.items()],
            "outputs": [{"name": k, "type": t} for k, t in outputs.items()]}


SERVICES = {
    "double": service("double", {"n": "int"}, {"n": "int"}),
    "shout": service("shout", {"text": "string"}, {"text": "string"}),
    "anything": service("anything", {"value": "any"}, {"value": "any"}),
}


def plan(steps, inputs=None, outputs=None, fingerprint=None):
    return {"version": 2, "inputs": inputs or [{"name": "n", "type": "int"}],
            "outputs": outputs or [], "fingerprint": fingerprint or f"test-{id(steps)}",
            "services": SERVICES, "workflows": {}, "node_count": 0, "tree": steps}


def call(node_id, service_name, inputs, outputs):
    return {"id": node_id, "kind": "call", "service": service_name, "in": inputs, "out": outputs}


@pytest.fixture
def store():
    store = Store.connect("mongomock://localhost/tree")
    store.ensure_indexes()
    return store


def new_event(store, tree_plan, data):
    now = utcnow()
    event = {"workflow_id": "w", "workflow_name": "w", "workflow_version": 1, "plan": tree_plan,
             "status": "running", "lease_owner": OWNER, "lease_expires": now + timedelta(seconds=30),
             "ack_date": now, "updated_at": now, "finished_at": None, "data": data, "context": dict(data),
             "steps": [], "next_step": 0, "run": 0, "runs": [], "outputs": None, "error": None,
             "callback_url": None, "callback_base": None, "trace": {"trace_id": "0" * 32}, "claims": [],
             "claim_count": 1, "claims_without_progress": 1, "progress": {}}
    stored, _ = store.insert_event(event)
    return stored


def run(store, services, tree_plan, data, config=None):
    executor = Executor(store, load_config(config or {}), connections=lambda: services, sleep=lambda s: None)
    event = new_event(store, tree_plan, data)
    executor.run(event, OWNER)
    return store.get_event(event["event_id"]), executor


def doubling(body, headers):
    return 200, {"n": body["n"] * 2}


def test_calls_in_order_pass_outputs_along_with_instance_headers(store):
    services = Services(double=doubling)
    steps = [call("a", "double", {"n": "n"}, {"n": "m"}), call("b", "double", {"n": "m"}, {"n": "total"})]
    event, _ = run(store, services, plan(steps, outputs=[{"name": "total", "type": "int"}]), {"n": 3})
    assert event["status"] == "completed" and event["outputs"] == {"total": 12}
    assert [c["body"] for c in services.calls] == [{"n": 3}, {"n": 6}]
    headers = services.calls[1]["headers"]
    assert headers["X-Machinery-Step"] == "b" and headers["Idempotency-Key"] == f"{event['event_id']}:b"
    records = store.step_runs_of(event["event_id"])
    assert [(r["instance"], r["status"], r["outputs"]) for r in records] == [
        ("a", "completed", {"n": 6}), ("b", "completed", {"n": 12})]
    assert event["progress"]["a"]["done"] == 1 and event["steps"] == []


def test_if_and_switch_take_the_branch_their_condition_says(store):
    services = Services(double=doubling)
    steps = [{"id": "big", "kind": "if", "if": "n > `10`",
              "then": [call("twice", "double", {"n": "n"}, {"n": "n"})], "else": []},
             {"id": "route", "kind": "switch", "cases": [
                 {"when": "n == `1`", "steps": [call("one", "double", {"n": "n"}, {"n": "out"})]},
                 {"when": "n > `20`", "steps": [call("large", "double", {"n": "n"}, {"n": "out"})]}],
              "default": [call("other", "double", {"n": "`0`"}, {"n": "out"})]}]
    event, _ = run(store, services, plan(steps, outputs=[{"name": "out", "type": "int"}]), {"n": 11})
    assert event["status"] == "completed" and event["outputs"] == {"out": 44}
    assert event["progress"]["big"]["taken"] == {"then": 1}
    assert event["progress"]["route"]["taken"] == {"1": 1}
    assert [r["instance"] for r in store.step_runs_of(event["event_id"])] == ["big/twice", "route/large"]
    event, _ = run(store, services, plan(steps, outputs=[{"name": "out", "type": "int"}]), {"n": 2})
    assert event["outputs"] == {"out": 0} and event["progress"]["route"]["taken"] == {"default": 1}


def test_a_condition_that_is_not_bool_fails_naming_the_path(store):
    steps = [{"id": "check", "kind": "if", "if": "n", "then": [], "else": []}]
    event, _ = run(store, Services(), plan(steps), {"n": 5})
    assert event["status"] == "failed"
    assert event["error"]["kind"] == "type" and event["error"]["step"] == "check"
    assert "check.if: expected bool, got int" in event["error"]["message"]


def test_parallel_branches_run_together_and_merge_their_keys(store):
    both = threading.Barrier(2, timeout=5)

    def meeting(body, headers):  # each branch waits for the other: they run at once or the barrier breaks
        both.wait()
        return 200, {"n": body["n"] + 1}
    services = Services(double=meeting)
    steps = [{"id": "fan", "kind": "parallel", "branches": [
        {"name": "left", "steps": [call("l", "double", {"n": "n"}, {"n": "left"})]},
        {"name": "right", "steps": [call("r", "double", {"n": "n"}, {"n": "right"})]}]}]
    event, _ = run(store, services, plan(steps, outputs=[{"name": "left", "type": "int"},
                                                        {"name": "right", "type": "int"}]), {"n": 1})
    assert event["status"] == "completed" and event["outputs"] == {"left": 2, "right": 2}
    assert sorted(r["instance"] for r in store.step_runs_of(event["event_id"])) == ["fan/l", "fan/r"]


def test_map_collects_in_item_order_with_items_in_their_own_context(store):
    def slow_first(body, headers):
        if body["n"] == 0:
            import time
            time.sleep(0.2)  # item 0 ends last: the collected array is still in item order
        return 200, {"n": body["n"] * 10}
    services = Services(double=slow_first)
    steps = [{"id": "each", "kind": "map", "map": "values", "as": "v", "max_concurrency": 4,
              "steps": [call("times", "double", {"n": "v"}, {"n": "scaled"})],
              "collect": {"results": "scaled", "seen": "v"}}]
    tree_plan = plan(steps, inputs=[{"name": "values", "type": {"type": "array", "items": "int"}}],
                     outputs=[{"name": "results", "type": "array"}, {"name": "seen", "type": "array"}])
    event, _ = run(store, services, tree_plan, {"values": [0, 1, 2, 3, 4]})
    assert event["status"] == "completed"
    assert event["outputs"] == {"results": [0, 10, 20, 30, 40], "seen": [0, 1, 2, 3, 4]}
    assert "scaled" not in event["context"] and "v" not in event["context"]
    records = store.step_runs_of(event["event_id"])
    assert sorted((r["instance"], r["item"], r["items"]) for r in records)[:2] == [
        ("each[0]/times", 0, [0]), ("each[1]/times", 1, [1])]
    assert event["progress"]["each"]["n"] == 5 and event["progress"]["each"]["done"] == 5
    keys = sorted(c["headers"]["Idempotency-Key"].split(":", 1)[1] for c in services.calls)
    assert keys == [f"each[{i}]/times" for i in range(5)]


def test_an_empty_map_collects_empty_arrays(store):
    steps = [{"id": "each", "kind": "map", "map": "values", "as": "v", "max_concurrency": 4,
              "steps": [call("times", "double", {"n": "v"}, {"n": "scaled"})], "collect": {"results": "scaled"}}]
    tree_plan = plan(steps, inputs=[{"name": "values", "type": "array"}],
                     outputs=[{"name": "results", "type": "array"}])
    event, _ = run(store, Services(), tree_plan, {"values": []})
    assert event["status"] == "completed" and event["outputs"] == {"results": []}


def test_a_map_over_a_value_that_is_not_an_array_fails_naming_the_path(store):
    steps = [{"id": "each", "kind": "map", "map": "values", "as": "v", "max_concurrency": 4, "steps": [],
              "collect": {}}]
    event, _ = run(store, Services(), plan(steps, inputs=[{"name": "values", "type": "any"}]), {"values": "abc"})
    assert event["status"] == "failed" and "each.map: expected array, got string" in event["error"]["message"]


def test_an_any_typed_input_is_checked_at_run_time(store):
    steps = [call("say", "shout", {"text": "value"}, {"text": "said"})]
    event, _ = run(store, Services(), plan(steps, inputs=[{"name": "value", "type": "any"}]), {"value": 7})
    assert event["status"] == "failed" and event["error"]["kind"] == "type"
    assert "say.in.text" in event["error"]["message"] and "expected string" in event["error"]["message"]


def test_a_failed_item_stops_items_not_started_and_names_its_instance(store):
    def failing(body, headers):
        if body["n"] == 3:
            return 400, {"error": "no"}
        return 200, {"n": body["n"]}
    services = Services(double=failing)
    steps = [{"id": "each", "kind": "map", "map": "values", "as": "v", "max_concurrency": 1,
              "steps": [call("hold", "double", {"n": "v"}, {"n": "got"})], "collect": {}}]
    tree_plan = plan(steps, inputs=[{"name": "values", "type": "array"}])
    event, _ = run(store, services, tree_plan, {"values": list(range(10))})
    assert event["status"] == "failed"
    assert event["error"]["instance"] == "each[3]/hold" and event["error"]["step"] == "hold"
    assert event["error"]["kind"] == "http_status"
    assert [c["body"]["n"] for c in services.calls] == [0, 1, 2, 3]  # items 4..9 never started
    assert event["progress"]["each"]["failed"] == 1 and event["progress"]["each"]["done"] == 3


def test_a_failed_branch_stops_what_follows_in_the_others(store):

    def handler(body, headers):
        if body["n"] == 0:
            return 500, {"error": "down"}
        return 200, {"n": body["n"]}
    services = Services(double=handler)
    steps = [{"id": "fan", "kind": "parallel", "branches": [
        {"name": "bad", "steps": [call("boom", "double", {"n": "`0`"}, {"n": "x"})]},
        {"name": "good", "steps": [call("g1", "double", {"n": "`1`"}, {"n": "y"}),
                                   call("g2", "double", {"n": "`2`"}, {"n": "z"})]}]},
             call("after", "double", {"n": "`3`"}, {"n": "w"})]
    event, _ = run(store, services, plan(steps), {"n": 0})
    assert event["status"] == "failed" and event["error"]["instance"] == "fan/boom"
    assert all(c["body"]["n"] != 3 for c in services.calls)  # what follows the parallel never ran


def test_a_resumed_event_does_not_call_completed_instances_again(store):
    services = Services(double=doubling)
    steps = [{"id": "each", "kind": "map", "map": "values", "as": "v", "max_concurrency": 2,
              "steps": [call("times", "double", {"n": "v"}, {"n": "scaled"})], "collect": {"results": "scaled"}}]
    tree_plan = plan(steps, inputs=[{"name": "values", "type": "array"}],
                     outputs=[{"name": "results", "type": "array"}])
    event = new_event(store, tree_plan, {"values": [1, 2, 3, 4]})
    for index in (0, 2):  # a run that crashed after two items
        store.insert_step_run({"event_id": event["event_id"], "run": 0, "instance": f"each[{index}]/times",
                               "node": "times", "kind": "call", "items": [index], "item": index,
                               "status": "completed", "outputs": {"n": 100 + index}, "started_at": utcnow()})
    store.update_event(event["event_id"], {"$set": {"claim_count": 2}})
    executor = Executor(store, load_config({}), connections=lambda: services, sleep=lambda s: None)
    executor.run(store.get_event(event["event_id"]), OWNER)
    event = store.get_event(event["event_id"])
    assert event["status"] == "completed" and event["outputs"] == {"results": [100, 4, 102, 8]}
    assert sorted(c["body"]["n"] for c in services.calls) == [2, 4]


def test_a_call_answering_202_parks_the_event_and_a_later_claim_sees_the_callback(store):
    answers = {"a": 0}

    def accepted(body, headers):
        answers["a"] += 1
        return 202, None
    services = Services(double=accepted, shout=lambda body, headers: (200, {"text": body["text"].upper()}))
    steps = [{"id": "fan", "kind": "parallel", "branches": [
        {"name": "slow", "steps": [call("wait", "double", {"n": "n"}, {"n": "m"})]},
        {"name": "fast", "steps": [call("say", "shout", {"text": "`\"hi\"`"}, {"text": "said"})]}]}]
    tree_plan = plan(steps, outputs=[{"name": "m", "type": "int"}, {"name": "said", "type": "string"}])
    event, executor = run(store, services, tree_plan, {"n": 1})
    assert event["status"] == "waiting" and event["lease_owner"] is None
    assert event["lease_expires"].replace(tzinfo=None) > utcnow()
    waiting = [r for r in store.step_runs_of(event["event_id"]) if r["status"] == "waiting"]
    assert [r["instance"] for r in waiting] == ["fan/wait"] and waiting[0]["expires"] is not None
    # The callback completes the record and wakes the event; the next claim finishes it.
    store.update_step_run(event["event_id"], 0, "fan/wait", {"$set": {"status": "completed", "outputs": {"n": 9}}})
    assert tree.wake(store, event["event_id"])
    claimed = store.claim_event(OWNER, 30)
    assert claimed["event_id"] == event["event_id"]
    executor.run(claimed, OWNER)
    event = store.get_event(event["event_id"])
    assert event["status"] == "completed" and event["outputs"] == {"m": 9, "said": "HI"}
    assert answers["a"] == 1 and len(services.of("shout")) == 1


def test_an_expired_callback_fails_the_step(store):
    services = Services(double=lambda body, headers: (202, None))
    tree_plan = plan([call("wait", "double", {"n": "n"}, {"n": "m"})])
    event, executor = run(store, services, tree_plan, {"n": 1})
    store.update_step_run(event["event_id"], 0, "wait", {"$set": {"expires": utcnow() - timedelta(seconds=1)}})
    store.update_event(event["event_id"], {"$set": {"lease_expires": EPOCH}})
    executor.run(store.claim_event(OWNER, 30), OWNER)
    event = store.get_event(event["event_id"])
    assert event["status"] == "failed" and event["error"]["kind"] == "callback_timeout"
    assert event["error"]["instance"] == "wait"


def test_a_sleep_parks_until_its_time_and_then_completes(store):
    services = Services(double=doubling)
    steps = [{"id": "nap", "kind": "sleep", "seconds": 60}, call("a", "double", {"n": "n"}, {"n": "m"})]
    event, executor = run(store, services, plan(steps, outputs=[{"name": "m", "type": "int"}]), {"n": 2})
    assert event["status"] == "waiting" and services.calls == []
    record = store.step_runs_of(event["event_id"])[0]
    assert record["status"] == "waiting"
    assert record["until"].replace(tzinfo=None) == event["lease_expires"].replace(tzinfo=None)
    assert store.claim_event(OWNER, 30) is None  # not due yet
    store.update_step_run(event["event_id"], 0, "nap", {"$set": {"until": utcnow() - timedelta(seconds=1)}})
    store.update_event(event["event_id"], {"$set": {"lease_expires": EPOCH}})
    executor.run(store.claim_event(OWNER, 30), OWNER)
    event = store.get_event(event["event_id"])
    assert event["status"] == "completed" and event["outputs"] == {"m": 4}
    assert store.step_runs_of(event["event_id"])[0]["status"] == "completed"


def test_a_sleep_until_a_date_that_is_not_one_fails_naming_the_path(store):
    steps = [{"id": "nap", "kind": "sleep", "until": "when"}]
    event, _ = run(store, Services(), plan(steps, inputs=[{"name": "when", "type": "any"}]), {"when": 5})
    assert event["status"] == "failed" and "nap.until" in event["error"]["message"]


def test_calls_in_flight_are_bounded_per_process(store):
    lock = threading.Lock()
    state = {"now": 0, "most": 0}

    def counting(body, headers):
        import time
        with lock:
            state["now"] += 1
            state["most"] = max(state["most"], state["now"])
        time.sleep(0.05)
        with lock:
            state["now"] -= 1
        return 200, {"n": body["n"]}
    services = Services(double=counting)
    steps = [{"id": "each", "kind": "map", "map": "values", "as": "v", "max_concurrency": 16,
              "steps": [call("c", "double", {"n": "v"}, {"n": "x"})], "collect": {}}]
    event, _ = run(store, services, plan(steps, inputs=[{"name": "values", "type": "array"}]),
                   {"values": list(range(12))}, config={"MACHINERY_MAX_CALLS": "3"})
    assert event["status"] == "completed" and len(services.calls) == 12
    assert 1 <= state["most"] <= 3

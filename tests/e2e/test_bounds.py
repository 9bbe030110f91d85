"""Bounded event records: step inputs stored by reference, replays by their changed values, claims
capped, and an event that would pass MongoDB's 16 MiB document limit failed once, for good, with its
service called no more. Against a real echo service on 127.0.0.1 that counts its calls."""

from __future__ import annotations

import time

import bson
import pytest
from bson import ObjectId

from machinery.app import create_app
from machinery.runtime.executor import Executor
from machinery.runtime.worker import LeaseKeeper, Worker
from machinery.serving import ServerThread
from machinery.store.limits import MAX_DOCUMENT_BYTES
from tests.conftest import register_examples
from tests.support.fakes import echo_service

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024
INLINE = 1 << 40  # an offload threshold no value reaches
MESSAGE = "x" * int(0.9 * MIB)  # the measurements: 0.9 MiB, echoed by every step
TEXT = [{"name": "message", "type": "string"}]


@pytest.fixture
def config(config):
    """Every value kept inline, whatever its size: what is under test here is the event's own bound,
    the net under MACHINERY_OFFLOAD_BYTES (tests/e2e/test_payloads.py tests the offloading)."""
    return {**config, "OFFLOAD_BYTES": INLINE}


@pytest.fixture
def echo():
    app = echo_service()
    server = ServerThread(app).start()
    yield server.url + "echo", app.config["calls"]
    server.stop()


def echo_chain(client, address, steps, name=None):
    name = name or f"echo-{steps}"
    assert client.post("/services", json={"name": "echo", "address": address, "inputs": TEXT,
                                          "outputs": TEXT}).status_code in (200, 201)
    assert client.post("/workflows", json={"name": name, "services": ["echo"] * steps, "inputs": TEXT,
                                           "outputs": TEXT}).status_code in (200, 201)
    return name


def stored_size(store, event_id) -> int:
    return len(bson.encode(store.events.find_one({"_id": ObjectId(event_id)})))


def test_a_five_step_chain_of_a_large_message_stores_no_copy_of_its_inputs(client, store, echo):
    # GIVEN a 5-step chain of an echo service
    workflow = echo_chain(client, echo[0], 5)
    # WHEN a 0.9 MiB message goes through it
    reply = client.post(f"/e/{workflow}", json={"message": MESSAGE})
    assert reply.status_code == 201, reply.get_json()
    event_id = reply.get_json()["event_id"]
    # THEN the record holds the data, the context, each step's outputs and the event's outputs once
    # each: 8 copies where it held 13 (11.4 MiB), and no step record holds the inputs it sent
    size = stored_size(store, event_id)
    assert size < 8 * 0.9 * MIB + 64 * 1024 and size < 0.7 * 11.4 * MIB, size
    assert all("inputs" not in record for record in store.get_event(event_id)["steps"])
    # AND the API still shows every step's inputs as sent
    shown = client.get(f"/events/{event_id}").get_json()
    assert [record["inputs"] for record in shown["steps"]] == [{"message": MESSAGE}] * 5


def test_a_replay_rebuilds_the_context_of_every_run_from_the_changed_values(client, store, example_services):
    # GIVEN a completed 3-step event (upper, reverse, space-counter), replayed from step 1 with a new message
    register_examples(client, example_services)
    event_id = client.post("/e/process-text", json={"message": "a b"}).get_json()["event_id"]
    first = client.post(f"/events/{event_id}/retry", json={"from_step": 1, "context": {"message": "one two three"}})
    assert first.get_json()["outputs"] == {"message": "eerht owt eno", "space_count": 2}
    # WHEN it is replayed again from step 2, with nothing changed
    second = client.post(f"/events/{event_id}/retry", json={"from_step": 2})
    # THEN step 2 read the context along the latest run: run 1's values, not run 0's
    assert second.status_code == 200 and second.get_json()["outputs"] == {"message": "eerht owt eno",
                                                                         "space_count": 2}
    stored = store.get_event(event_id)
    assert [entry.keys() for entry in stored["runs"]] == [{"run", "from_step", "at", "overrides",
                                                            "previous_status"}] * 2
    assert stored["runs"][0]["overrides"] == {"message": "one two three"} and stored["runs"][1]["overrides"] == {}
    # AND every record, of every run, shows the inputs its step was sent
    shown = client.get(f"/events/{event_id}").get_json()["steps"]
    assert [(record["run"], record["step"], record["inputs"]) for record in shown] == [
        (0, 0, {"message": "a b"}), (0, 1, {"message": "A B"}), (0, 2, {"message": "B A"}),
        (1, 1, {"message": "one two three"}), (1, 2, {"message": "eerht owt eno"}),
        (2, 2, {"message": "eerht owt eno"})]


def test_an_event_stored_in_the_old_shape_is_shown_and_replayed_as_it_was(client, store, example_services):
    # GIVEN an event as the previous version stored it: inputs copied into each record, a replay
    # holding its whole base_context, no claim counters
    register_examples(client, example_services)
    template = client.post("/e/process-text", json={"message": "a b"}).get_json()
    plan = store.get_event(template["event_id"])["plan"]
    at = store.get_event(template["event_id"])["ack_date"].replace(tzinfo=None)

    def record(step, run, inputs, outputs):
        return {"step": step, "service": plan["steps"][step]["service"]["name"], "status": "completed",
                "run": run, "attempts": 1, "started_at": at, "finished_at": at, "duration_ms": 1.0,
                "inputs": inputs, "outputs": outputs, "span_id": "0" * 16, "attempt_log": []}

    old = {
        "workflow_id": template["workflow_id"], "workflow_name": "process-text", "workflow_version": 1,
        "plan": plan, "status": "completed", "lease_owner": None, "lease_expires": at, "ack_date": at,
        "updated_at": at, "finished_at": at, "data": {"message": "a b"}, "next_step": 3, "run": 1,
        "context": {"message": "dlrow olleh", "space_count": 1},
        "steps": [record(0, 0, {"message": "a b"}, {"message": "A B"}),
                  record(1, 0, {"message": "A B"}, {"message": "B A"}),
                  record(2, 0, {"message": "B A"}, {"message": 1}),
                  record(1, 1, {"message": "hello world"}, {"message": "dlrow olleh"}),
                  record(2, 1, {"message": "dlrow olleh"}, {"message": 1})],
        "runs": [{"run": 1, "from_step": 1, "at": at, "previous_status": "completed",
                  "base_context": {"message": "hello world", "space_count": 1},
                  "overrides": {"message": "hello world"}}],
        "outputs": {"message": "dlrow olleh", "space_count": 1}, "error": None, "callback_url": None,
        "callback_base": None, "trace": {"trace_id": "1" * 32}, "claims": [{"owner": "old", "at": at}],
    }
    event_id = str(store.events.insert_one(old).inserted_id)
    # WHEN it is read, THEN its records show the inputs they hold
    shown = client.get(f"/events/{event_id}").get_json()
    assert [record["inputs"] for record in shown["steps"]] == [record["inputs"] for record in old["steps"]]
    assert shown["claim_count"] == 1
    # WHEN it is replayed from step 2, THEN step 2 reads run 1's context (from its base_context)
    replay = client.post(f"/events/{event_id}/retry", json={"from_step": 2, "context": {"message": "x y z"}})
    assert replay.status_code == 200 and replay.get_json()["outputs"] == {"message": "x y z", "space_count": 2}
    # AND a replay from step 1 starts again from run 1's base
    again = client.post(f"/events/{event_id}/retry", json={"from_step": 1})
    assert again.get_json()["outputs"] == {"message": "dlrow olleh", "space_count": 1}
    shown = client.get(f"/events/{event_id}").get_json()["steps"]
    assert [(record["run"], record["step"], record["inputs"]) for record in shown[5:]] == [
        (2, 2, {"message": "x y z"}), (3, 1, {"message": "hello world"}), (3, 2, {"message": "dlrow olleh"})]


def test_an_event_that_would_pass_16_mib_fails_once_and_its_service_is_not_called_again(client, store, echo,
                                                                                        config):
    # GIVEN a 20-step chain of an echo service, and a 0.9 MiB message: each step adds 0.9 MiB to the record
    address, calls = echo
    workflow = echo_chain(client, address, 20)
    # WHEN it is sent
    reply = client.post(f"/e/{workflow}", json={"message": MESSAGE})
    # THEN it fails at the step whose outputs would take the record past 16 MiB, for good
    body = reply.get_json()
    assert reply.status_code == 502 and body["status"] == "failed"
    error = body["error"]
    assert error["kind"] == "too_large" and error["limit_bytes"] == MAX_DOCUMENT_BYTES
    assert "16 MiB" in error["message"] and f"step {error['step']} (echo)" in error["message"]
    assert "try again" not in error["message"]
    event_id = body["event_id"]
    assert calls[event_id] == error["step"] + 1
    # AND the failing write was made, without the outputs that did not fit
    stored = store.get_event(event_id)
    assert stored_size(store, event_id) < MAX_DOCUMENT_BYTES
    assert stored["status"] == "failed" and stored["next_step"] == error["step"]
    last = stored["steps"][-1]
    assert last["status"] == "failed" and last["outputs_dropped"] and "outputs" not in last
    # WHEN workers look for work for a while, leases expiring, THEN nobody claims it or calls the service again
    worker = Worker(store, Executor(store, {**config, "LEASE_S": 0.1}), LeaseKeeper(store, 0.1),
                    {"LEASE_S": 0.1, "POLL_S": 0.01}, threads=1)
    deadline = time.monotonic() + 1.0
    while time.monotonic() < deadline:
        assert not worker.work_once("test-worker", 0.1)
        time.sleep(0.1)
    assert calls[event_id] == error["step"] + 1
    assert store.get_event(event_id)["claim_count"] == 1


def test_a_new_event_too_large_to_store_is_413_naming_the_limit(config, echo):
    # GIVEN an API that reads bodies of up to 32 MiB
    app = create_app({**config, "MAX_BODY_BYTES": 32 * MIB})
    client, store = app.test_client(), app.extensions["machinery"].store
    workflow = echo_chain(client, echo[0], 1)
    # WHEN an event is sent whose data, kept twice (as data and as context), passes 16 MiB
    reply = client.post(f"/e/{workflow}", json={"message": "y" * (9 * MIB)})
    # THEN it is refused with 413 naming the limit, nothing is stored and the service is not called
    assert reply.status_code == 413, reply.get_json()
    assert "16 MiB" in reply.get_json()["message"]
    assert store.events.count_documents({}) == 0
    assert sum(echo[1].values()) == 0
    app.extensions["machinery"].close(grace_s=1)


def test_a_callback_whose_outputs_do_not_fit_fails_its_event_with_413(client, store, echo, faulty):
    # GIVEN an event 14 echo steps of a 0.9 MiB message long, its last step waiting for a callback
    address, calls = echo
    echo_chain(client, address, 1)
    assert client.post("/services", json={"name": "later", "address": f"{faulty[0]}/async", "inputs": TEXT,
                                          "outputs": TEXT}).status_code == 201
    assert client.post("/workflows", json={"name": "then-later", "services": ["echo"] * 14 + ["later"],
                                           "inputs": TEXT, "outputs": TEXT}).status_code == 201
    reply = client.post("/e/then-later", json={"message": MESSAGE})
    assert reply.status_code == 202 and reply.get_json()["status"] == "waiting", reply.get_json()
    event_id = reply.get_json()["event_id"]
    callback = faulty[1].config["callbacks"][-1]
    # WHEN the service calls back with outputs the record has no room for
    answer = client.post(callback[callback.index("/callbacks/"):], json={"message": MESSAGE.upper()})
    # THEN the callback is 413 naming the limit, and the event failed for good at that step
    assert answer.status_code == 413 and "16 MiB" in answer.get_json()["message"]
    event = store.get_event(event_id)
    assert event["status"] == "failed" and event["error"]["kind"] == "too_large" and event["error"]["step"] == 14
    assert "waiting" not in event and event["steps"][-1]["outputs_dropped"]
    assert stored_size(store, event_id) < MAX_DOCUMENT_BYTES
    # AND the spent callback cannot be used again
    assert client.post(callback[callback.index("/callbacks/"):], json={"message": "x"}).status_code == 410

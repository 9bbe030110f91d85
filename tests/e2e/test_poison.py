"""Poison events: an event whose every run fails the same way is given up after MACHINERY_MAX_CLAIMS
claims without a step ending (kind `stuck`, naming the last error), and never holds up the others."""

from __future__ import annotations

import pytest
from bson import ObjectId

from machinery import events
from machinery.runtime.executor import Executor
from machinery.runtime.worker import LeaseKeeper, Worker
from tests.conftest import register_examples
from tests.support.processes import wait_until

pytestmark = pytest.mark.e2e

LEASE_S = 0.3
MAX_CLAIMS = 3


@pytest.fixture
def worker(store, config):
    settings = {**config, "LEASE_S": LEASE_S, "POLL_S": 0.02, "MAX_CLAIMS": MAX_CLAIMS}
    worker = Worker(store, Executor(store, settings), LeaseKeeper(store, LEASE_S), settings, threads=1)
    yield worker
    worker.stop(grace_s=2)


def test_a_poison_event_stops_after_max_claims_and_the_others_keep_being_claimed(client, store, worker,
                                                                                 example_services):
    # GIVEN a pending event whose plan its run cannot read (as a record written by some other version
    # might be), so that every run of it raises at once
    register_examples(client, example_services)
    poison, _ = events.new_event(store, "process-text", {"message": "poison"})
    store.events.update_one({"_id": ObjectId(poison["event_id"])}, {"$set": {"plan.steps.0.inputs": None}})
    # WHEN one worker thread runs while good events keep coming
    worker.start()
    good = []
    for n in range(12):
        good.append(events.new_event(store, "process-text", {"message": f"good {n}"})[0]["event_id"])
        worker.wake()
        if n % 4 == 3:
            wait_until(lambda times=n // 4 + 1: store.get_event(poison["event_id"])["claim_count"] >= times, 10,
                       message="the poison event claimed again")
    # THEN every good event completes
    wait_until(lambda: all(store.get_event(event_id)["status"] == "completed" for event_id in good), 30,
               message="the good events completed")
    # AND the poison event is failed for good by the claim after MAX_CLAIMS, naming its last error
    failed = wait_until(lambda: (event := store.get_event(poison["event_id"]))["status"] == "failed" and event,
                        20, message="the poison event failed")
    assert failed["error"]["kind"] == "stuck" and failed["error"]["step"] == 0
    assert f"MACHINERY_MAX_CLAIMS={MAX_CLAIMS}" in failed["error"]["message"]
    assert "AttributeError" in failed["error"]["message"] and "AttributeError" in failed["last_error"]["message"]
    assert failed["claim_count"] == MAX_CLAIMS + 1 and failed["steps"] == []
    # AND it is not claimed again
    worker.stop(grace_s=2)
    assert store.claim_event("another", 30) is None


def test_a_step_that_ends_starts_the_count_again(client, store, config, example_services):
    # GIVEN an event claimed MAX_CLAIMS - 1 times without progress (its worker died each time),
    # whose second step cannot run
    register_examples(client, example_services)
    event, _ = events.new_event(store, "process-text", {"message": "slow but sure"})
    store.events.update_one({"_id": ObjectId(event["event_id"])}, {"$set": {"plan.steps.1.inputs": None}})
    for _ in range(MAX_CLAIMS - 1):
        assert store.claim_event("doomed", 0) is not None
    # WHEN the next claim's run ends its first step, then raises
    claimed = store.claim_event("alive", 0)
    assert claimed["claims_without_progress"] == MAX_CLAIMS
    with pytest.raises(AttributeError):
        Executor(store, {**config, "MAX_CLAIMS": MAX_CLAIMS}).run(claimed, "alive")
    # THEN the step that ended set the count back to 0: the next claim is its first without progress
    stored = store.get_event(event["event_id"])
    assert stored["next_step"] == 1 and stored["claims_without_progress"] == 0
    assert "AttributeError" in stored["last_error"]["message"]
    assert store.claim_event("next", 30)["claims_without_progress"] == 1

"""Durability across processes: gunicorn and `machinery worker` processes sharing one MongoDB-speaking store.

The store is MACHINERY_TEST_MONGO_URI when set, otherwise the wire-protocol test server over mongomock
(tests/support/mongowire.py), so every process goes through pymongo as it would in production.
"""

from __future__ import annotations

import signal
from collections import Counter
from concurrent.futures import ThreadPoolExecutor

import pytest
import requests

from machinery.store import Store
from tests.e2e.conftest import STORE_TIMEOUT_MS, register_examples_over_http, worker_env
from tests.support.processes import gunicorn_api, start_worker, stop, wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def env(shared_uri):
    """The environment of the API and worker processes a test starts on the shared store."""
    return worker_env(shared_uri)


@pytest.fixture
def store(shared_uri):
    """The shared store, as the test's own process sees it."""
    store = Store.connect(shared_uri, STORE_TIMEOUT_MS)
    yield store
    store.close()




def slow_one(http, api, example_services, delay_s):
    """Register the examples with slow-upper sleeping `delay_s` before it answers, and a one-step workflow
    `slow-one` over it."""
    addresses = {**example_services, "slow-upper": example_services["slow-upper"] + f"?mode=sleep&delay={delay_s}"}
    register_examples_over_http(http, api, addresses)
    http.post(f"{api}/workflows", json={
        "name": "slow-one", "services": ["slow-upper"],
        "inputs": [{"name": "message", "type": "string"}], "outputs": [{"name": "message", "type": "string"}],
    }, timeout=10)


def test_five_hundred_async_events_complete_exactly_once_across_two_workers(http, env, store, example_services):
    workers = [start_worker(env, "--threads", "4") for _ in range(2)]
    try:
        with gunicorn_api(env) as api:
            register_examples_over_http(http, api, example_services)

            def send(n):
                response = requests.post(f"{api}/e/process-text?mode=async", json={"message": f"event {n}"},
                                         timeout=30)
                assert response.status_code == 202
                return response.json()["event_id"]

            with ThreadPoolExecutor(8) as pool:
                ids = list(pool.map(send, range(500)))
            assert len(set(ids)) == 500
            wait_until(lambda: store.count_events("completed") == 500, 240, 0.5, "500 events completed")
    finally:
        for worker in workers:
            assert stop(worker) == 0
    events = store.list_events(1, 100)[1]
    assert events == 500
    owners = Counter()
    for document in store.events.find({}, {"steps": 1, "claims": 1, "status": 1}):
        steps = [step["step"] for step in document["steps"]]
        assert document["status"] == "completed" and steps == [0, 1, 2], document["_id"]
        assert len(document["claims"]) == 1
        owners[document["claims"][0]["owner"].rsplit("/", 1)[0]] += 1
    # Both worker processes took part.
    assert len(owners) == 2, owners


def test_a_worker_killed_mid_step_leaves_its_event_to_another_after_the_lease(http, env, store, example_services):
    addresses = {**example_services, "slow-upper": example_services["slow-upper"] + "?mode=sleep&delay=2"}
    with gunicorn_api(env) as api:
        register_examples_over_http(http, api, addresses)
        http.post(f"{api}/workflows", json={
            "name": "slow-chain", "services": ["upper", "slow-upper", "reverse"],
            "inputs": [{"name": "message", "type": "string"}], "outputs": [{"name": "message", "type": "string"}],
        }, timeout=10)
        first = start_worker(env, "--threads", "1")
        sent = http.post(f"{api}/e/slow-chain?mode=async", json={"message": "survive"}, timeout=10)
        event_id = sent.json()["event_id"]
        # GIVEN the first worker is inside the slow second step
        wait_until(lambda: store.get_event(event_id)["next_step"] == 1, 20, message="first step done")
        # WHEN it is killed with -9
        first.send_signal(signal.SIGKILL)
        first.wait(timeout=10)
        held_by = store.get_event(event_id)["lease_owner"]
        second = start_worker(env, "--threads", "1")
        try:
            # THEN another worker resumes it once the lease expires, from the step in flight
            event = wait_until(lambda: (e := store.get_event(event_id))["status"] == "completed" and e, 30,
                               message="event completed by the second worker")
        finally:
            assert stop(second) == 0
    assert event["outputs"] == {"message": "EVIVRUS"}
    assert [step["step"] for step in event["steps"]] == [0, 1, 2]
    assert [claim["owner"] for claim in event["claims"]][0] == held_by
    assert len(event["claims"]) == 2 and event["claims"][1]["owner"] != held_by
    assert event["steps"][0]["attempts"] == 1


def test_sigterm_releases_an_unfinished_event_for_another_worker(http, env, store, example_services):
    with gunicorn_api(env) as api:
        slow_one(http, api, example_services, delay_s=2)
        first = start_worker({**env, "MACHINERY_LEASE_S": "30"}, "--threads", "1", "--grace", "0.2")
        event_id = http.post(f"{api}/e/slow-one?mode=async", json={"message": "bye"}, timeout=10).json()["event_id"]
        wait_until(lambda: store.get_event(event_id)["lease_owner"], 20, message="claimed")
        # WHEN the worker is asked to stop while its step is still running
        assert stop(first, signal.SIGTERM) == 0
        # THEN it gave the event back instead of holding it for the 30 s lease
        released = store.get_event(event_id)
        assert released["status"] == "pending" and released["lease_owner"] is None
        second = start_worker(env, "--threads", "1")
        try:
            event = wait_until(lambda: (e := store.get_event(event_id))["status"] == "completed" and e, 30,
                               message="completed after the release")
        finally:
            stop(second)
    assert event["outputs"] == {"message": "BYE"} and len(event["steps"]) == 1


def test_sigterm_lets_a_short_step_finish(http, env, store, example_services):
    with gunicorn_api(env) as api:
        slow_one(http, api, example_services, delay_s=1)
        worker = start_worker(env, "--threads", "1", "--grace", "10")
        event_id = http.post(f"{api}/e/slow-one?mode=async", json={"message": "fin"}, timeout=10).json()["event_id"]
        wait_until(lambda: store.get_event(event_id)["lease_owner"], 20, message="claimed")
        assert stop(worker, signal.SIGTERM) == 0
    event = store.get_event(event_id)
    assert event["status"] == "completed" and event["outputs"] == {"message": "FIN"}

"""What an operator sees of a MongoDB that refuses or is slow, and what several API processes on one
MongoDB keep true: an index conflict named in /readyz and in init-db's exit, duplicate names that do
not crash the app, a slow server answered 503 in bounded time, and registrations racing deletions."""

from __future__ import annotations

import threading
import time
import uuid

import pymongo
import pytest
import requests

from machinery.app import create_app
from machinery.serving import free_port
from tests.conftest import definition
from tests.support.mongowire import WireServer
from tests.support.processes import MACHINERY, clean_env, run, serving


@pytest.fixture
def wire():
    server = WireServer().start()
    yield server
    server.stop()


def fresh_uri(server: WireServer) -> str:
    return server.uri.replace("/machinery", f"/deploy-{uuid.uuid4().hex[:8]}")


def hand_made_conflict(uri: str) -> None:
    """An index made by hand before Machinery's: the claim index's keys under another name."""
    with pymongo.MongoClient(uri) as client:
        client.get_default_database()["events"].create_index([("status", 1), ("lease_expires", 1)],
                                                               name="made_by_hand")


def test_an_index_conflict_is_named_in_readyz_and_the_api_says_an_operator_must_act(wire):
    # GIVEN a database holding an index that conflicts with one Machinery makes
    uri = fresh_uri(wire)
    hand_made_conflict(uri)
    # WHEN the app starts on it
    app = create_app({"MONGO_URI": uri, "EMBEDDED_WORKERS": 0})
    try:
        client = app.test_client()
        ready, listed = client.get("/readyz"), client.get("/services")
    finally:
        app.extensions["machinery"].close(grace_s=1)
    # THEN /readyz is 503 naming the index, the collection and MongoDB's code, with no "try again"
    assert ready.status_code == 503 and "Retry-After" not in ready.headers
    message = ready.get_json()["message"]
    assert "status_1_lease_expires_1" in message and "events" in message and "85" in message
    # AND the API answers 503 saying the deployment needs an operator, without the details
    assert listed.status_code == 503 and "Retry-After" not in listed.headers
    assert "operator" in listed.get_json()["message"] and "made_by_hand" not in listed.get_json()["message"]


def test_duplicate_names_do_not_crash_the_app_and_readyz_names_them(wire):
    # GIVEN two services of one name stored before any unique index existed
    uri = fresh_uri(wire)
    with pymongo.MongoClient(uri) as client:
        client.get_default_database()["services"].insert_many([{"name": "twin"}, {"name": "twin"}])
    # WHEN the app starts on it THEN it starts, and /readyz names the duplicates
    app = create_app({"MONGO_URI": uri, "EMBEDDED_WORKERS": 0})
    try:
        ready = app.test_client().get("/readyz")
    finally:
        app.extensions["machinery"].close(grace_s=1)
    assert ready.status_code == 503
    assert "services" in ready.get_json()["message"] and "duplicates" in ready.get_json()["message"]


def test_init_db_exits_at_once_naming_an_index_conflict(wire):
    # GIVEN a conflicting index
    uri = fresh_uri(wire)
    hand_made_conflict(uri)
    # WHEN init-db runs with a long wait for the store
    started = time.monotonic()
    result = run([*MACHINERY, "init-db", "--wait", "60"], clean_env(MACHINERY_MONGO_URI=uri), timeout=50)
    # THEN it fails without waiting, naming the index and MongoDB's code
    assert result.returncode != 0
    assert "status_1_lease_expires_1" in result.stderr and "85" in result.stderr, result.stderr
    assert time.monotonic() - started < 40


def test_init_db_makes_the_indexes_and_says_so(wire):
    uri = fresh_uri(wire)
    result = run([*MACHINERY, "init-db", "--wait", "10"], clean_env(MACHINERY_MONGO_URI=uri), timeout=50)
    assert result.returncode == 0 and "indexes ensured" in result.stdout, result.stderr
    with pymongo.MongoClient(uri) as client:
        names = {index["name"] for index in client.get_default_database()["events"].list_indexes()}
    assert {"events_newest", "events_by_workflow", "events_by_status", "events_by_workflow_status"} <= names


def test_a_slow_server_is_answered_503_within_the_operation_timeout(wire):
    # GIVEN the app ready on a server, with a 300 ms operation timeout
    app = create_app({"MONGO_URI": fresh_uri(wire), "EMBEDDED_WORKERS": 0, "MONGO_TIMEOUT_MS": 300})
    try:
        client = app.test_client()
        assert client.get("/readyz").status_code == 200
        # WHEN the server takes 5 s to answer anything
        wire.store.delay_s = 5.0
        started = time.monotonic()
        answer = client.get("/services")
        took = time.monotonic() - started
    finally:
        wire.store.delay_s = 0.0
        app.extensions["machinery"].close(grace_s=1)
    # THEN the request is answered 503 "try again" long before the server would have
    assert answer.status_code == 503 and answer.headers["Retry-After"]
    assert took < 4.0


@pytest.mark.e2e
def test_two_api_processes_never_leave_a_workflow_whose_service_was_deleted(wire):
    # GIVEN two API processes on one MongoDB, and the services of the example workflow registered
    uri = fresh_uri(wire)
    env = clean_env(MACHINERY_MONGO_URI=uri, MACHINERY_EMBEDDED_WORKERS="0")
    ports = [free_port(), free_port()]
    with serving([*MACHINERY, "serve", "--bind", f"127.0.0.1:{ports[0]}", "--workers", "1", "--threads", "4"],
                 ports[0], env, ready="/readyz") as first, \
            serving([*MACHINERY, "serve", "--bind", f"127.0.0.1:{ports[1]}", "--workers", "1", "--threads", "4"],
                    ports[1], env, ready="/readyz") as second:
        for name in ("service-upper", "service-reverse", "service-space-counter"):
            assert first.post("/services", json=definition(name)).status_code == 201
        workflow = definition("workflow-process-text")
        outcomes = set()
        for _ in range(25):
            # WHEN one process deletes a service while the other registers a workflow that uses it
            answers = race(lambda: requests.delete(first.url + "/services/upper", timeout=30).status_code,
                           lambda: second.post("/workflows", json=workflow).status_code)
            # THEN either the workflow was refused or the delete was: never both done
            registered = second.get("/workflows/process-text").status_code == 200
            service_there = second.get("/services/upper").status_code == 200
            assert not (registered and not service_there), answers
            assert answers[0] in (204, 409) and answers[1] in (201, 409, 422), answers
            outcomes.add(answers)
            # (and back to the start: no workflow, the service registered)
            if registered:
                assert requests.delete(first.url + "/workflows/process-text", timeout=10).status_code == 204
            if not service_there:
                assert first.post("/services", json=definition("service-upper")).status_code == 201
    assert outcomes  # every round ended one of the two ways


def race(*calls) -> tuple:
    """Run the calls in threads released together; their results, in order (bounded waits)."""
    results: list = [None] * len(calls)
    barrier = threading.Barrier(len(calls))

    def run_one(number, call):
        barrier.wait(5)
        results[number] = call()

    threads = [threading.Thread(target=run_one, args=item) for item in enumerate(calls)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    return tuple(results)


def test_closing_the_app_ends_its_mongodb_client_at_once(wire):
    # GIVEN an app on a MongoDB, which has talked to it
    app = create_app({"MONGO_URI": fresh_uri(wire), "EMBEDDED_WORKERS": 0, "MONGO_TIMEOUT_MS": 3000})
    store = app.extensions["machinery"].store
    assert app.test_client().get("/readyz").status_code == 200
    # WHEN it is closed
    app.extensions["machinery"].close(grace_s=1)
    # THEN its client is ended now, not left to the collector (its threads and connections with it)
    with pytest.raises(pymongo.errors.InvalidOperation):
        store.db.client.admin.command("ping")

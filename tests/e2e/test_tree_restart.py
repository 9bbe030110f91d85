"""A durable sleep outlives its processes: the API (gunicorn) and the `machinery worker` are killed with -9
while a tree event sleeps between two calls, new ones are started on the same store, and the event ends
with each call made once. Also a sleep until a date the event's data gives, and a sync event that sleeps,
which is answered 202 with its Location as soon as it parks instead of holding the request.

Processes share the store as in test_workers (MACHINERY_TEST_MONGO_URI, or the wire-protocol test server);
the test service counts its calls per Idempotency-Key, which names the event and the step instance.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone

import pytest

from machinery.serving import ServerThread
from tests.e2e.test_workers import env, store  # noqa: F401 - the shared store's fixtures
from tests.support.processes import gunicorn_served, kill_9, start_worker, stop, wait_until
from tests.support.tree_services import tree_services

pytestmark = pytest.mark.e2e

INT = {"name": "n", "type": "int"}
WHEN = {"name": "when", "type": "string"}
SLEEP_S = 6  # long enough that the kill surely comes while the event sleeps; checked after the kill


@pytest.fixture
def counting():
    app = tree_services()
    server = ServerThread(app).start()
    yield server.url.rstrip("/"), app
    server.stop()


def register(http, api, url, name, sleep, inputs):
    assert http.post(f"{api}/services", json={
        "name": "double", "address": f"{url}/double", "retry": {"max_attempts": 3, "backoff_s": 0.1},
        "inputs": [INT], "outputs": [INT]}, timeout=10).status_code in (200, 201)
    reply = http.post(f"{api}/workflows", json={
        "name": name, "inputs": inputs, "outputs": [INT],
        "steps": [{"id": "before", "call": "double", "out": {"n": "m"}},
                  {"id": "nap", "sleep": sleep},
                  {"id": "after", "call": "double", "in": {"n": "m"}}]}, timeout=10)
    assert reply.status_code in (200, 201), reply.text


def record(store, event_id, node):  # noqa: F811
    found = list(store.step_runs.find({"event_id": event_id, "node": node}, {"_id": 0}))
    assert len(found) <= 1, found
    return found[0] if found else None


def sleeping(store, event_id) -> bool:  # noqa: F811
    """Whether the event is parked in its sleep: the first call done, the sleep's record waiting."""
    nap = record(store, event_id, "nap")
    return store.get_event(event_id)["status"] == "waiting" and nap is not None and nap["status"] == "waiting"


def kill_all_while_it_sleeps(api, worker, store, app, event_id):  # noqa: F811
    """kill -9 the API (gunicorn's master and workers) and the worker, then check that the event was
    still asleep when they died: nothing resumed it, and the second call was not made."""
    kill_9(api.process)
    kill_9(worker)
    nap = record(store, event_id, "nap")
    assert store.get_event(event_id)["status"] == "waiting", "the event was no longer asleep at the kill"
    assert nap["status"] == "waiting" and nap["until"].replace(tzinfo=None) > datetime.now(UTC).replace(tzinfo=None)
    assert app.config["counts"].get(f"{event_id}:after", 0) == 0


def resumed(env, store, http, event_id):  # noqa: F811
    """Start a new API and a new worker on the same store; wait (bounded) for the event to end, read
    through the new API."""
    worker = start_worker(env, "--threads", "2")
    try:
        with gunicorn_served(env) as api:
            event = wait_until(
                lambda: (e := http.get(f"{api.url}/events/{event_id}", timeout=10).json())["status"]
                in ("completed", "failed") and e, 120, 0.25, "the event ended after the restart")
    finally:
        assert stop(worker) == 0
    return event


def test_an_async_sleep_outlives_kill_9_of_the_api_and_the_worker(http, env, store, counting):  # noqa: F811
    url, app = counting
    # GIVEN an API and a worker on one store, and a tree that sleeps between two calls
    worker = start_worker(env, "--threads", "2")
    try:
        with gunicorn_served(env) as api:
            register(http, api.url, url, "nap", {"seconds": SLEEP_S}, [INT])
            # WHEN an async event is sent, and both processes are killed with -9 while it sleeps
            sent = http.post(f"{api.url}/e/nap?mode=async", json={"n": 5}, timeout=30)
            assert sent.status_code == 202, sent.text
            event_id = sent.json()["event_id"]
            wait_until(lambda: sleeping(store, event_id), 60, 0.1, "the event sleeps")
            kill_all_while_it_sleeps(api, worker, store, app, event_id)
    finally:
        kill_9(worker)
    # THEN a new API and a new worker finish it: each call made once, the sleep recorded once, completed
    event = resumed(env, store, http, event_id)
    assert event["status"] == "completed", event.get("error")
    assert event["outputs"] == {"n": 20}
    calls = app.config["counts"]
    assert calls[f"{event_id}:before"] == 1 and calls[f"{event_id}:after"] == 1
    assert [(step["instance"], step["status"]) for step in event["steps"]] == [
        ("before", "completed"), ("nap", "completed"), ("after", "completed")]
    assert len(event["claims"]) >= 2


def test_a_sleep_until_a_date_from_the_event_data_outlives_the_restart(http, env, store, counting):  # noqa: F811
    url, app = counting
    # GIVEN a tree that sleeps until the date its event names, given in another time zone than UTC
    worker = start_worker(env, "--threads", "2")
    try:
        with gunicorn_served(env) as api:
            register(http, api.url, url, "nap-until", {"until": "when"}, [INT, WHEN])
            wake_at = (datetime.now(UTC) + timedelta(seconds=SLEEP_S)).replace(microsecond=0)
            written = wake_at.astimezone(timezone(timedelta(hours=-5))).isoformat()
            # WHEN it is sent async, and everything is killed with -9 while it sleeps
            event_id = http.post(f"{api.url}/e/nap-until?mode=async", json={"n": 3, "when": written},
                                 timeout=30).json()["event_id"]
            wait_until(lambda: sleeping(store, event_id), 60, 0.1, "the event sleeps")
            # THEN it sleeps until that very instant, in UTC, and parks until then
            nap = record(store, event_id, "nap")
            assert nap["until"].replace(tzinfo=None) == wake_at.replace(tzinfo=None)
            assert store.get_event(event_id)["lease_expires"].replace(tzinfo=None) == wake_at.replace(tzinfo=None)
            kill_all_while_it_sleeps(api, worker, store, app, event_id)
    finally:
        kill_9(worker)
    # AND new processes finish it after that instant, each call made once
    event = resumed(env, store, http, event_id)
    assert event["status"] == "completed", event.get("error")
    assert event["outputs"] == {"n": 12}
    calls = app.config["counts"]
    assert calls[f"{event_id}:before"] == 1 and calls[f"{event_id}:after"] == 1
    after = record(store, event_id, "after")
    assert after["started_at"].replace(tzinfo=None) >= wake_at.replace(tzinfo=None)


def test_a_sync_event_that_sleeps_is_answered_202_with_its_location_when_it_parks(http, env, store,  # noqa: F811
                                                                                   counting):
    url, app = counting
    worker = start_worker(env, "--threads", "2")
    try:
        with gunicorn_served(env) as api:
            register(http, api.url, url, "nap", {"seconds": SLEEP_S}, [INT])
            # WHEN a sync event is sent to a tree that sleeps after its first call
            reply = http.post(f"{api.url}/e/nap", json={"n": 5}, timeout=30)
            # THEN the API answers 202 with the event's Location once the first call is made and the event
            # parks: it does not hold the request through the sleep
            assert reply.status_code == 202, reply.text
            body = reply.json()
            event_id = body["event_id"]
            assert reply.headers["Location"] == f"/events/{event_id}"
            assert body["status"] == "waiting" and body["outputs"] is None
            assert sleeping(store, event_id)
            assert app.config["counts"].get(f"{event_id}:before") == 1
            assert app.config["counts"].get(f"{event_id}:after", 0) == 0
            assert http.get(api.url + reply.headers["Location"], timeout=10).json()["status"] == "waiting"
            # AND the event goes on without the caller, across a kill -9 of every process
            kill_all_while_it_sleeps(api, worker, store, app, event_id)
    finally:
        kill_9(worker)
    event = resumed(env, store, http, event_id)
    assert event["status"] == "completed", event.get("error")
    assert event["outputs"] == {"n": 20}
    calls = app.config["counts"]
    assert calls[f"{event_id}:before"] == 1 and calls[f"{event_id}:after"] == 1

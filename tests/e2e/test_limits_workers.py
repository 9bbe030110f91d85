"""The 16 MiB document limit across processes: a `machinery worker` on a MongoDB-speaking store (the wire
test server, or MACHINERY_TEST_MONGO_URI) fails an event that outgrows it once, and never calls its
service again, however many leases expire."""

from __future__ import annotations

import time

import pytest

from machinery.app import create_app
from machinery.serving import ServerThread, free_port
from machinery.store.limits import MAX_DOCUMENT_BYTES
from tests.support.fakes import echo_service
from tests.support.processes import MACHINERY, clean_env, serving, wait_until

pytestmark = pytest.mark.e2e

LEASE_S = 1.0
TEXT = [{"name": "message", "type": "string"}]


def test_a_worker_fails_an_event_past_16_mib_once_and_never_calls_its_service_again(shared_uri):
    # GIVEN an echo service that counts its calls, a 20-step chain of it, and a `machinery worker` process
    echo = echo_service()
    service = ServerThread(echo).start()
    # Every value kept inline (MACHINERY_OFFLOAD_BYTES past them all): the bound of the event itself is under test.
    app = create_app({"MONGO_URI": shared_uri, "EMBEDDED_WORKERS": 0, "MONGO_TIMEOUT_MS": 5000,
                      "OFFLOAD_BYTES": 1 << 40})
    client = app.test_client()
    store = app.extensions["machinery"].store
    assert client.post("/services", json={"name": "echo", "address": service.url + "echo", "inputs": TEXT,
                                          "outputs": TEXT}).status_code == 201
    assert client.post("/workflows", json={"name": "long", "services": ["echo"] * 20, "inputs": TEXT,
                                           "outputs": TEXT}).status_code == 201
    metrics_port = free_port()
    env = clean_env(MACHINERY_MONGO_URI=shared_uri, MACHINERY_LEASE_S=str(LEASE_S), MACHINERY_POLL_S="0.05",
                    MACHINERY_WORKER_METRICS_PORT=str(metrics_port), MACHINERY_OFFLOAD_BYTES=str(1 << 40))
    try:
        with serving([*MACHINERY, "worker", "--threads", "2"], metrics_port, env, ready="/metrics"):
            # WHEN an async event of a 0.9 MiB message is sent: every step adds 0.9 MiB to its record
            event_id = client.post("/e/long?mode=async", json={"message": "x" * int(0.9 * 1024 * 1024)}
                                   ).get_json()["event_id"]
            event = wait_until(lambda: (e := store.get_event(event_id))["status"] == "failed" and e, 120, 0.2,
                               "the event failed")
            calls = echo.config["calls"][event_id]
            # AND the worker goes on looking for work while several leases expire
            time.sleep(4 * LEASE_S)
            # THEN it failed once, at the step whose outputs did not fit, and that was the last call
            assert echo.config["calls"][event_id] == calls == event["error"]["step"] + 1
            later = store.get_event(event_id)
    finally:
        app.extensions["machinery"].close(grace_s=1)
        store.close()
        service.stop()
    assert event["error"]["kind"] == "too_large" and event["error"]["limit_bytes"] == MAX_DOCUMENT_BYTES
    assert "16 MiB" in event["error"]["message"] and "try again" not in event["error"]["message"]
    assert later["status"] == "failed" and later["claim_count"] == 1 and later["updated_at"] == event["updated_at"]
    assert later["steps"][-1]["outputs_dropped"] and len(later["steps"]) == event["error"]["step"] + 1

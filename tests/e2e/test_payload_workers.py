"""Large values across processes: the API stores an event's data as files, a `machinery worker` process
reads them back to call the services and stores its steps' outputs, and the API serves them, all on one
MongoDB-speaking store (the wire test server, or MACHINERY_TEST_MONGO_URI)."""

from __future__ import annotations

import json

import bson
import pytest
import requests
from bson import ObjectId

from machinery.app import create_app
from machinery.serving import ServerThread, free_port
from tests.support.payload_services import payload_services
from tests.support.processes import MACHINERY, clean_env, serving, wait_until

pytestmark = pytest.mark.e2e

MIB = 1024 * 1024


def test_a_worker_process_runs_an_event_of_large_values_the_api_stored(shared_uri):
    services = ServerThread(payload_services()).start()
    url = services.url.rstrip("/")
    app = create_app({"MONGO_URI": shared_uri, "EMBEDDED_WORKERS": 0, "MONGO_TIMEOUT_MS": 5000})
    client, store = app.test_client(), app.extensions["machinery"].store
    field = [{"name": "doc", "type": "object"}]
    for number in range(3):
        assert client.post("/services", json={"name": f"pass-{number}", "address": f"{url}/pass", "timeout_s": 60,
                                              "inputs": field, "outputs": field}).status_code == 201
    assert client.post("/workflows", json={"name": "far", "services": ["pass-0", "pass-1", "pass-2"],
                                           "inputs": field, "outputs": field}).status_code == 201
    value = {"rows": [{"id": number, "text": "ø" * 40} for number in range(60_000)]}  # about 5 MB of JSON
    metrics_port = free_port()
    env = clean_env(MACHINERY_MONGO_URI=shared_uri, MACHINERY_POLL_S="0.05",
                    MACHINERY_WORKER_METRICS_PORT=str(metrics_port), MACHINERY_TEST_EVENT_MAX_BYTES="1000000")
    try:
        with serving([*MACHINERY, "worker", "--threads", "2"], metrics_port, env, ready="/metrics"):
            reply = client.post("/e/far?mode=async", json={"doc": value})
            assert reply.status_code == 202, reply.get_json()
            event_id = reply.get_json()["event_id"]
            event = wait_until(lambda: (e := client.get(f"/events/{event_id}").get_json())["status"]
                               in ("completed", "failed") and e, 120, 0.2, "the event ended")
        assert event["status"] == "completed", event.get("error")
        ref = event["outputs"]["doc"]
        download = client.get(f"/events/{event_id}/values/{ref['$ref']}")
        assert json.loads(download.data) == value and ref["bytes"] == len(download.data)
        assert len(bson.encode(store.events.find_one({"_id": ObjectId(event_id)}))) < 64 * 1024
        seen = requests.get(f"{url}/seen", timeout=10).json()
        assert seen["calls"] == 3 and seen["refs"] == 0 and seen["largest"] >= ref["bytes"]  # plain JSON, whole
    finally:
        app.extensions["machinery"].close(grace_s=1)
        store.close()
        services.stop()

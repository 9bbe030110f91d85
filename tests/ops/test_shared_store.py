"""Over the wire to a MongoDB (the test wire server, or a real one with MACHINERY_TEST_MONGO_URI):
several gunicorn workers share one store, and readiness follows the server going away and coming back."""

from __future__ import annotations

import os
import socket
import time
import uuid

import pytest

from machinery.app import create_app
from machinery.serving import free_port
from tests.conftest import EXAMPLE_TEXT, definition, register_examples
from tests.ops.procs import value
from tests.support.mongowire import WireServer
from tests.support.processes import MACHINERY, clean_env, serving, wait_until

REAL_URI = os.environ.get("MACHINERY_TEST_MONGO_URI")


class DroppingWireServer(WireServer):
    """The wire server, whose stop() also cuts the connections it has open, as a dying server does."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.open: list[socket.socket] = []

    def get_request(self):
        connection, address = super().get_request()
        self.open.append(connection)
        return connection, address

    def stop(self) -> None:
        super().stop()
        for connection in self.open:
            try:
                connection.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            connection.close()


@pytest.fixture(params=["wire", "mongodb"])
def mongo_uri(request):
    """A fresh database on the wire server, or on the real MongoDB when one is configured."""
    if request.param == "wire":
        server = WireServer().start()
        yield server.uri
        server.stop()
        return
    if not REAL_URI:
        pytest.skip("set MACHINERY_TEST_MONGO_URI=mongodb://... to run against a real MongoDB")
    import pymongo

    base, _, query = REAL_URI.partition("?")
    name = f"ops-{uuid.uuid4().hex[:8]}"
    uri = base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
    yield uri
    with pymongo.MongoClient(REAL_URI) as client:
        client.drop_database(name)


@pytest.mark.e2e
def test_two_workers_on_one_mongodb_store_see_the_same_definitions(mongo_uri):
    # GIVEN the API with 2 gunicorn workers on one store
    port = free_port()
    env = clean_env(MACHINERY_MONGO_URI=mongo_uri, MACHINERY_EMBEDDED_WORKERS="0")
    with serving([*MACHINERY, "serve", "--bind", f"127.0.0.1:{port}", "--workers", "2", "--threads", "2"],
                 port, env) as api:
        # WHEN a service is registered through one connection
        assert api.post("/services", json=definition("service-upper")).status_code == 201
        # THEN every later request, whichever worker answers it, finds it
        answers = [api.get("/services/upper") for _ in range(12)]
        # A request's metric is written once its reply is sent: the scrape is made again until the last is.
        def scraped():
            text = api.get("/metrics").text
            return text if value(text, "machinery_http_request_duration_seconds_count", method="GET",
                                 endpoint="/services/<ref>", status="200") >= 12 else None

        scrape = wait_until(scraped, 10, message="the 12 requests' metrics written")
        ready = api.get("/readyz")
    assert [answer.status_code for answer in answers] == [200] * 12
    assert value(scrape, "machinery_http_request_duration_seconds_count",
                 method="GET", endpoint="/services/<ref>", status="200") == 12
    assert ready.status_code == 200 and ready.json()["store"] == "mongodb"


def test_readyz_follows_a_mongodb_wire_server_going_away_and_coming_back():
    # GIVEN an API ready on a MongoDB server
    server = DroppingWireServer().start()
    port = server.server_address[1]
    app = create_app({"MONGO_URI": server.uri, "MONGO_TIMEOUT_MS": 300, "EMBEDDED_WORKERS": 0})
    client = app.test_client()
    try:
        assert client.get("/readyz").status_code == 200
        # WHEN the server goes away
        server.stop()
        down = client.get("/readyz")
        services = client.get("/services")
        # THEN the API answers 503 with the error body, not a 500
        assert down.status_code == 503 and "store is unavailable" in down.get_json()["message"]
        assert services.status_code == 503 and services.get_json()["code"] == 503
        # WHEN a server answers on the same address again, THEN the API is ready again, by itself
        server = DroppingWireServer(port=port).start()
        deadline = time.monotonic() + 15
        while client.get("/readyz").status_code != 200:
            assert time.monotonic() < deadline, "the API did not recover within 15 s"
            time.sleep(0.2)
        assert client.get("/services").status_code == 200
    finally:
        app.extensions["machinery"].close(grace_s=1)
        server.stop()


@pytest.mark.e2e
def test_a_machinery_worker_runs_async_events_and_serves_their_metrics(example_services):
    # GIVEN an API (in this process) and a `machinery worker` process on one MongoDB store
    server = WireServer().start()
    app = create_app({"MONGO_URI": server.uri, "EMBEDDED_WORKERS": 0})
    client = app.test_client()
    register_examples(client, example_services)
    metrics_port = free_port()
    env = clean_env(MACHINERY_MONGO_URI=server.uri, MACHINERY_WORKER_METRICS_PORT=str(metrics_port),
                    MACHINERY_POLL_S="0.05")
    try:
        with serving([*MACHINERY, "worker", "--threads", "2"], metrics_port, env, ready="/metrics") as worker:
            # WHEN an async event is sent
            event_id = client.post("/e/process-text?mode=async",
                                   json={"data": {"message": EXAMPLE_TEXT}}).get_json()["event_id"]
            deadline = time.monotonic() + 15
            while client.get(f"/events/{event_id}").get_json()["status"] != "completed":
                assert time.monotonic() < deadline, "the worker did not run the event within 15 s"
                time.sleep(0.05)
            scrape = worker.get("/metrics").text
    finally:
        app.extensions["machinery"].close(grace_s=1)
        server.stop()
    # THEN the worker counted it, and serves machinery_* metrics only
    assert value(scrape, "machinery_events_finished_total", workflow="process-text", status="completed") == 1
    assert value(scrape, "machinery_service_calls_total", service="upper", outcome="ok") == 1
    names = {line.split()[2] for line in scrape.splitlines() if line.startswith("# TYPE")}
    assert names and all(name.startswith("machinery_") for name in names)

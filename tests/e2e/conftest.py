"""Live servers for the end-to-end tests: the API, the misbehaving service, a hang-up server, a webhook sink."""

from __future__ import annotations

import json
import os
import uuid

import pytest
import requests

from machinery.app import create_app
from machinery.serving import ServerThread
from tests.conftest import DEFINITIONS
from tests.support.fakes import HostileServer, faulty_service, webhook_receiver
from tests.support.mongowire import WireServer

pytestmark = pytest.mark.e2e

# MACHINERY_MONGO_TIMEOUT_MS bounds every operation. The wire server answers one command at a time,
# scanning mongomock's documents, so hundreds of events on a loaded machine make it far slower than a
# MongoDB: give its operations the time it needs, as a slow server's deployment would.
STORE_TIMEOUT_MS = 20000


@pytest.fixture
def shared_uri():
    """A store several processes share: a database of its own on MACHINERY_TEST_MONGO_URI (dropped
    after), or else the wire test server (tests/support/mongowire.py) over the embedded store."""
    real = os.environ.get("MACHINERY_TEST_MONGO_URI")
    if real:
        import pymongo

        base, _, query = real.partition("?")
        name = f"machinery_shared_{uuid.uuid4().hex[:8]}"
        yield base.rsplit("/", 1)[0] + f"/{name}" + (f"?{query}" if query else "")
        with pymongo.MongoClient(real) as client:
            client.drop_database(name)
        return
    server = WireServer().start()
    yield server.uri
    server.stop()


def worker_env(uri: str, **settings: str) -> dict:
    """The environment of API and worker processes on the shared store: no embedded workers, short
    leases, quick polls; `settings` (MACHINERY_* names) over them."""
    return {"MACHINERY_MONGO_URI": uri, "MACHINERY_EMBEDDED_WORKERS": "0", "MACHINERY_LEASE_S": "2",
            "MACHINERY_POLL_S": "0.05", "MACHINERY_MONGO_TIMEOUT_MS": str(STORE_TIMEOUT_MS), **settings}


@pytest.fixture
def live(config):
    """The API served for real on 127.0.0.1; yields (base URL, app)."""
    app = create_app(config)
    server = ServerThread(app).start()
    yield f"http://127.0.0.1:{server.port}", app
    server.stop()
    app.extensions["machinery"].close(grace_s=2)


@pytest.fixture
def api(live):
    return live[0]


@pytest.fixture
def http():
    with requests.Session() as session:
        yield session


@pytest.fixture(scope="module")
def httpbin():
    """httpbin (from PyPI), a real third-party HTTP API, served on 127.0.0.1 for the module."""
    from httpbin import app

    server = ServerThread(app).start()
    yield server.url.rstrip("/")
    server.stop()


@pytest.fixture
def faulty():
    app = faulty_service()
    server = ServerThread(app).start()
    yield server.url.rstrip("/"), app
    server.stop()


@pytest.fixture
def hang_up():
    server = HostileServer("hang-up").start()
    yield server.url
    server.stop()


@pytest.fixture
def receiver():
    app = webhook_receiver()
    server = ServerThread(app).start()
    yield f"{server.url}hook", app
    server.stop()


def register_examples_over_http(http, api, addresses):
    for path in sorted(DEFINITIONS.glob("service-*.json")):
        service = json.loads(path.read_text())
        service["address"] = addresses.get(service["name"], service["address"])
        assert http.post(f"{api}/services", json=service, timeout=10).status_code in (200, 201)
    for path in sorted(DEFINITIONS.glob("workflow-*.json")):
        assert http.post(f"{api}/workflows", json=json.loads(path.read_text()), timeout=10).status_code in (200, 201)


def one_step_workflow(http, api, name, address, **service_options):
    """Register a service at `address` and a one-step workflow over it, both called `name`."""
    service = {"name": name, "address": address, "inputs": [{"name": "message", "type": "string"}],
               "outputs": [{"name": "message", "type": "string"}], **service_options}
    assert http.post(f"{api}/services", json=service, timeout=10).status_code in (200, 201)
    workflow = {"name": name, "services": [name], "inputs": [{"name": "message", "type": "string"}],
                "outputs": [{"name": "message", "type": "string"}]}
    assert http.post(f"{api}/workflows", json=workflow, timeout=10).status_code in (200, 201)

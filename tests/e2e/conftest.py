"""Live servers for the end-to-end tests: the API, the misbehaving service, a hang-up server, a webhook sink."""

from __future__ import annotations

import json

import pytest
import requests

from machinery.app import create_app
from machinery.serving import ServerThread
from tests.conftest import DEFINITIONS
from tests.support.fakes import HostileServer, faulty_service, webhook_receiver

pytestmark = pytest.mark.e2e


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

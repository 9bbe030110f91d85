"""Shared fixtures: a fresh app and store per test, the example definitions, real example services."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from machinery.app import create_app
from machinery.cli import EXAMPLE_SERVICES, _load_example
from machinery.serving import ServerThread

ROOT = Path(__file__).resolve().parent.parent
DEFINITIONS = ROOT / "examples" / "definitions"
EXAMPLE_TEXT = "The Sun will rise in the morning !"
EXAMPLE_RESULT = {"message": "! GNINROM EHT NI ESIR LLIW NUS EHT", "space_count": 7}


def definition(name: str) -> dict:
    return json.loads((DEFINITIONS / f"{name}.json").read_text())


@pytest.fixture
def config():
    """Test settings: a fresh embedded store, no background workers unless a test asks."""
    return {"MONGO_URI": "mongomock://localhost/machinery", "EMBEDDED_WORKERS": 0, "POLL_S": 0.05}


@pytest.fixture
def app(config):
    app = create_app(config)
    yield app
    app.extensions["machinery"].close(grace_s=2)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.fixture
def store(app):
    return app.extensions["machinery"].store


@pytest.fixture(scope="session")
def example_services():
    """The example services, served for real on 127.0.0.1 free ports: {name: url}."""
    servers = {name: ServerThread(_load_example(module)).start() for name, module in EXAMPLE_SERVICES.items()}
    yield {name: server.url for name, server in servers.items()}
    for server in servers.values():
        server.stop()


def register_examples(client, addresses: dict[str, str] | None = None) -> None:
    """Register the example services (at the given addresses) and workflows through the API."""
    addresses = addresses or {}
    for path in sorted(DEFINITIONS.glob("service-*.json")):
        service = json.loads(path.read_text())
        service["address"] = addresses.get(service["name"], service["address"])
        response = client.post("/services", json=service)
        assert response.status_code in (200, 201), response.get_json()
    for path in sorted(DEFINITIONS.glob("workflow-*.json")):
        response = client.post("/workflows", json=json.loads(path.read_text()))
        assert response.status_code in (200, 201), response.get_json()

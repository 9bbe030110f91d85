"""Shared fixtures: a fresh app and store per test, the example definitions, real example services."""

from __future__ import annotations

import ast
import json
import sys
import threading
from pathlib import Path

import pytest

from machinery.app import create_app
from machinery.cli import EXAMPLE_SERVICES, _load_example
from machinery.serving import ServerThread

ROOT = Path(__file__).resolve().parent.parent
DEFINITIONS = ROOT / "examples" / "definitions"
EXAMPLE_TEXT = "The Sun will rise in the morning !"
EXAMPLE_RESULT = {"message": "! GNINROM EHT NI ESIR LLIW NUS EHT", "space_count": 7}


# Pythons whose AST constructor counts its recursion in state every parse shares (CPython gh-106905).
PARSES_SHARE_STATE = (3, 11) <= sys.version_info < (3, 11, 8) or (3, 12) <= sys.version_info < (3, 12, 2)
PARSE_WAIT_S = 10.0


def _one_parse_at_a_time() -> None:
    """Python 3.11 before 3.11.8 (and 3.12 before 3.12.2) keeps the AST constructor's recursion count in
    state shared by the whole interpreter (CPython gh-106905), so a parse that begins while another is
    building its tree spoils it: "SystemError: AST constructor recursion depth mismatch". Here that
    happens two ways. The garbage collector, run in the middle of Hypothesis parsing its strategies'
    lambdas, finalizes an object whose finalizer raises, and pytest formats that unraisable exception's
    traceback at once, in the same thread; Python 3.11's traceback parses each line for its caret
    anchors. Or a background thread formats a traceback as it logs one. So in this process a parse
    waits for the one under way in another thread, and a parse begun inside this thread's own (or
    kept waiting past PARSE_WAIT_S, which only a deadlock would do) is refused as a SyntaxError, which
    the traceback module takes as "no carets". The product does not need this: at worst the race costs
    it a log line (logging reports a record it could not format), and its image runs a fixed Python."""
    if not PARSES_SHARE_STATE:
        return
    parse, lock, inside = ast.parse, threading.Lock(), threading.local()

    def parse_alone(*args, **kwargs):
        if getattr(inside, "parsing", False) or not lock.acquire(timeout=PARSE_WAIT_S):
            raise SyntaxError("not parsed: another parse is building its tree (CPython gh-106905)")
        inside.parsing = True
        try:
            return parse(*args, **kwargs)
        finally:
            inside.parsing = False
            lock.release()

    ast.parse = parse_alone


_one_parse_at_a_time()


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

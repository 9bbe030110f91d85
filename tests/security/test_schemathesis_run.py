"""`schemathesis run --checks all` against a real server holding the examples, open and with API keys: no failure.

The served spec is meant to be exact: what it admits is accepted (or refused for what only the registry can
say, see schemathesis.toml), what it refuses is refused, every reply is as documented, and credentials are
asked for exactly when they are enforced.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from machinery.app import create_app
from machinery.serving import ServerThread
from tests.conftest import EXAMPLE_TEXT, ROOT, register_examples
from tests.security.conftest import ADMIN_KEY, API_KEYS, bearer

# Small enough to stay near a minute per run on two shared cores; MACHINERY_SCHEMATHESIS_EXAMPLES raises it.
MAX_EXAMPLES = os.environ.get("MACHINERY_SCHEMATHESIS_EXAMPLES", "5")
RUN_TIMEOUT_S = 420
SCHEMATHESIS = Path(sys.executable).with_name("schemathesis")


def _served(example_services, **config):
    app = create_app({"MONGO_URI": "mongomock://localhost/machinery-schemathesis", "EMBEDDED_WORKERS": 1,
                      "POLL_S": 0.05, **config})
    client = app.test_client()
    if config.get("API_KEYS"):
        client.environ_base["HTTP_AUTHORIZATION"] = bearer(ADMIN_KEY)["Authorization"]
    register_examples(client, example_services)
    sent = client.post("/e/process-text", json={"data": {"message": EXAMPLE_TEXT}})
    assert sent.status_code == 201, sent.get_json()
    return app, ServerThread(app).start()


def _run(url: str, *extra: str) -> subprocess.CompletedProcess:
    command = [str(SCHEMATHESIS), "run", f"{url}openapi.json", "--checks", "all", "--max-examples", MAX_EXAMPLES,
               "--seed", "12", "--workers", "1", "--request-timeout", "30", "--no-color", *extra]
    # From the repository root, as a user runs it, so that schemathesis.toml applies.
    return subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=RUN_TIMEOUT_S,
                          env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"})


def _report(result: subprocess.CompletedProcess) -> str:
    return (result.stdout[-6000:] + result.stderr[-2000:]).strip()


@pytest.fixture(scope="module")
def open_server(example_services):
    app, server = _served(example_services)
    yield server
    server.stop()
    app.extensions["machinery"].close(grace_s=2)


@pytest.fixture(scope="module")
def keyed_server(example_services):
    app, server = _served(example_services, API_KEYS=API_KEYS)
    yield server
    server.stop()
    app.extensions["machinery"].close(grace_s=2)


def test_schemathesis_finds_no_failure_against_the_open_api(open_server):
    result = _run(open_server.url)
    assert result.returncode == 0, _report(result)
    assert "No issues found" in result.stdout or " passed" in result.stdout, _report(result)


def test_schemathesis_finds_no_failure_with_api_keys_and_an_admin_key(keyed_server):
    result = _run(keyed_server.url, "-H", f"Authorization: Bearer {ADMIN_KEY}")
    assert result.returncode == 0, _report(result)


def test_the_spec_asks_for_credentials_only_when_keys_are_configured(open_server, keyed_server):
    import requests

    open_spec = requests.get(f"{open_server.url}openapi.json", timeout=10).json()
    keyed_spec = requests.get(f"{keyed_server.url}openapi.json", timeout=10).json()
    assert "security" not in open_spec
    assert "apiKey" not in open_spec["components"]["securitySchemes"]
    assert open_spec["paths"]["/e/{workflow_ref}"]["post"]["security"][0] == {}
    assert keyed_spec["security"] == [{"apiKey": []}, {"apiKeyBasic": []}]
    assert keyed_spec["components"]["securitySchemes"]["apiKeyBasic"]["scheme"] == "basic"
    assert {} not in keyed_spec["paths"]["/e/{workflow_ref}"]["post"]["security"]
    assert keyed_spec["paths"]["/callbacks/{token}"]["post"]["security"] == []
    assert "401" in keyed_spec["paths"]["/services"]["get"]["responses"]
    assert "401" not in open_spec["paths"]["/services"]["get"]["responses"]

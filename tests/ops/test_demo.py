"""`make run`: the demo starts the examples, registers the orders secret, and runs both example workflows."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from machinery.serving import free_port
from tests.conftest import ROOT

TOKEN = "demo-token-given-by-the-environment"


@pytest.mark.e2e
def test_the_demo_runs_the_rest_example_and_never_shows_its_token():
    env = {**os.environ, "MACHINERY_SECRET_ORDERS_TOKEN": TOKEN}
    env.pop("MACHINERY_MONGO_URI", None)
    done = subprocess.run([sys.executable, "-m", "machinery.cli", "demo", "--once", "--port", str(free_port())],
                          cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "service-orders.yaml: service 'orders' registered" in done.stdout
    assert "workflow-order-note.yaml: workflow 'order-note' registered" in done.stdout
    assert "POST /e/order-note -> 201 completed" in done.stdout
    assert '"message": "PLEASE LEAVE IT AT THE BACK DOOR", "total": 288.0' in done.stdout
    assert TOKEN not in done.stdout and TOKEN not in done.stderr
    # The examples written as a tree of steps: a map of parallel steps, and the order sentence over REST.
    assert "POST /e/word-shapes -> 201 completed" in done.stdout
    assert '"mirrored": ["reppu", "dna", "esrever"' in done.stdout
    assert "POST /e/order-fulfil -> 201 completed" in done.stdout
    assert '"total": 878.0, "reservations": ["R-' in done.stdout and '"verdict": "clear"' in done.stdout

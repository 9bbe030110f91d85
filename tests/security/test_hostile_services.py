"""Services that answer with 50 MB, redirect elsewhere, or never finish: the step fails cleanly within its timeout."""

from __future__ import annotations

import time

import pytest

from machinery.runtime import worker
from machinery.store import EPOCH
from tests.security.conftest import SERVICE, close, make_app, workflow
from tests.support.fakes import HostileServer

pytestmark = pytest.mark.e2e
TIMEOUT_S = 1.0


@pytest.fixture
def app():
    app = make_app(MAX_RESPONSE_BYTES=1024 * 1024)
    yield app
    close(app)


@pytest.fixture
def hostile():
    servers = []

    def start(mode, **options):
        server = HostileServer(mode, **options).start()
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def run_against(app, address: str, attempts: int = 1):
    client = app.test_client()
    service = {**SERVICE, "address": address, "timeout_s": TIMEOUT_S,
               "retry": {"max_attempts": attempts, "backoff_s": 0}}
    assert client.post("/services", json=service).status_code in (200, 201)
    assert client.post("/workflows", json=workflow("w")).status_code in (200, 201)
    started = time.monotonic()
    response = client.post("/e/w", json={"message": "hi"})
    return response, time.monotonic() - started


@pytest.mark.parametrize("mode", ["huge", "huge-undeclared"])
def test_a_50_mb_reply_fails_the_step_without_reading_it(app, hostile, mode):
    server = hostile(mode, size=50 * 1024 * 1024)
    response, took = run_against(app, server.url)
    assert response.status_code == 502
    error = response.get_json()["error"]
    assert error["kind"] == "too_large" and "1048576" in error["message"]
    assert took < TIMEOUT_S + 1
    assert server.bytes_sent < 50 * 1024 * 1024


def test_a_redirect_to_another_host_is_not_followed(app, hostile):
    target = hostile("silent")
    server = hostile("redirect", location=f"http://localhost:{target.port}/steal")
    response, _ = run_against(app, server.url, attempts=3)
    assert response.status_code == 502
    error = response.get_json()["error"]
    assert error["kind"] == "redirect" and "not followed" in error["message"]
    assert server.connections == 1  # not retried
    assert target.connections == 0


@pytest.mark.parametrize("mode", ["trickle-body", "trickle-headers", "silent"])
def test_a_reply_that_never_ends_fails_the_step_within_its_timeout(app, hostile, mode):
    server = hostile(mode, interval=0.02)
    response, took = run_against(app, server.url, attempts=2)
    assert response.status_code == 502
    error = response.get_json()["error"]
    assert error["kind"] == "timeout", error
    assert took < 2 * TIMEOUT_S + 1.5  # two attempts, each cut at its timeout


@pytest.mark.parametrize("mode", ["huge", "trickle-headers", "silent"])
def test_a_webhook_receiver_that_misbehaves_does_not_hold_a_worker(app, hostile, monkeypatch, mode):
    monkeypatch.setattr(worker, "WEBHOOK_TIMEOUT_S", TIMEOUT_S)
    receiver = hostile(mode, interval=0.02)
    store = app.extensions["machinery"].store
    client = app.test_client()
    client.post("/services", json=SERVICE)
    client.post("/workflows", json=workflow("w"))
    answer = client.post("/e/w?mode=async", json={"data": {"message": "x"}, "callback_url": receiver.url})
    store.update_event(answer.get_json()["event_id"], {"$set": {"status": "completed", "webhook": {
        "status": "pending", "attempts": [], "next_at": EPOCH}}})
    event = store.claim_webhook("me", 30)
    started = time.monotonic()
    status = worker.deliver_webhook(store, event, {"WEBHOOK_MAX_ATTEMPTS": 5}, "me")
    took = time.monotonic() - started
    assert took < TIMEOUT_S + 1
    if mode == "huge":
        assert status == "delivered"  # a 200; its 50 MB body is never downloaded
        assert receiver.bytes_sent < 50 * 1024 * 1024
    else:
        assert status == "pending"  # retried later, with backoff

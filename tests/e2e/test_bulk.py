"""A bulk retry over HTTP: 300 events failed by a broken service are counted, retried by one job whose
progress can be followed, and all complete, each service call made once per event after the fix."""

from __future__ import annotations

import threading
import time
from collections import Counter

import pytest
from flask import Flask, jsonify, request

from machinery.runtime import bulk
from machinery.serving import ServerThread

TEXT = [{"name": "message", "type": "string"}]
EVENTS = 300


def counting_service() -> Flask:
    """Answers 503 while config["broken"], then the message in uppercase; counts calls per event."""
    app = Flask("counting")
    app.config.update(broken=True, calls=Counter(), served=Counter())
    lock = threading.Lock()

    @app.post("/gate")
    def gate():
        event = request.headers.get("X-Machinery-Event", "")
        with lock:
            app.config["calls"][event] += 1
            if app.config["broken"]:
                return "broken", 503
            app.config["served"][event] += 1
        return jsonify({"message": str((request.get_json(silent=True) or {}).get("message", "")).upper()})
    return app


@pytest.fixture
def config(config):
    return {**config, "EMBEDDED_WORKERS": 4}


@pytest.fixture
def gate():
    app = counting_service()
    server = ServerThread(app).start()
    yield server.url.rstrip("/"), app
    server.stop()


def wait(check, seconds: float):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        found = check()
        if found:
            return found
        time.sleep(0.02)
    raise AssertionError(f"not within {seconds} s")


def test_a_bulk_retry_of_300_failed_events_completes_them_all_once(http, api, gate, monkeypatch):
    # GIVEN 300 events failed at a broken service (no retries)
    url, service = gate
    monkeypatch.setattr(bulk, "PAGE_SIZE", 20)
    assert http.post(f"{api}/services", json={"name": "gate", "address": f"{url}/gate", "retry": {"max_attempts": 1},
                                              "inputs": TEXT, "outputs": TEXT}, timeout=10).status_code == 201
    assert http.post(f"{api}/workflows", json={"name": "gated", "services": ["gate"], "inputs": TEXT,
                                               "outputs": TEXT}, timeout=10).status_code == 201
    for number in range(EVENTS):
        assert http.post(f"{api}/e/gated", json={"message": f"m{number}"}, timeout=10).status_code == 502
    service.config["broken"] = False
    # WHEN a retry of the failed ones is dry run, then made
    body = {"action": "retry", "filter": {"workflow": "gated", "status": "failed"}}
    dry = http.post(f"{api}/events/bulk", json={**body, "dry_run": True}, timeout=10).json()
    assert (dry["matched"], dry["applicable"]) == (EVENTS, EVENTS)
    made = http.post(f"{api}/events/bulk", json=body, timeout=10)
    assert made.status_code == 202
    location = api + made.headers["Location"]
    # THEN the job reports its progress as it goes, and completes with all 300 done
    seen = [made.json()["handled"]]

    def finished():
        job = http.get(location, timeout=10).json()
        seen.append(job["handled"])
        return job if job["status"] == "completed" else None
    job = wait(finished, 60)
    assert (job["done"], job["skipped"], job["failed"], job["pages"], job["progress"]) == (EVENTS, 0, 0, 15, 1.0)
    assert seen == sorted(seen) and len(set(seen)) >= 2 and seen[-1] == EVENTS
    # AND every event completes, the service having served each exactly once (and been called twice in all)
    wait(lambda: http.get(f"{api}/events?workflow=gated&status=completed", timeout=10).json()["total"] == EVENTS, 120)
    assert len(service.config["served"]) == EVENTS and set(service.config["served"].values()) == {1}
    assert set(service.config["calls"].values()) == {2}
    # AND a second retry job finds nothing left to retry
    again = http.post(f"{api}/events/bulk", json={**body, "dry_run": True}, timeout=10).json()
    assert again["matched"] == 0

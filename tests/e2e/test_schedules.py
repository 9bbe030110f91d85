"""Schedules end to end, as `make run` serves them: the API's own workers fire the ticks over real HTTP
services, and pausing stops them."""

from __future__ import annotations

import time
from datetime import datetime

import pytest

from tests.conftest import EXAMPLE_RESULT, EXAMPLE_TEXT
from tests.e2e.conftest import register_examples_over_http
from tests.support.processes import wait_until

pytestmark = pytest.mark.e2e


@pytest.fixture
def config(config):
    return {**config, "EMBEDDED_WORKERS": 2}


def scheduled(http, api, status="completed"):
    return http.get(f"{api}/events", params={"workflow": "process-text", "status": status, "page_size": 100},
                    timeout=10).json()["items"]


def test_an_every_second_schedule_sends_events_that_run_and_stop_when_paused(http, api, example_services):
    register_examples_over_http(http, api, example_services)
    made = http.post(f"{api}/schedules", json={"name": "heartbeat", "workflow": "process-text",
                                                "data": {"message": EXAMPLE_TEXT}, "every_s": 1}, timeout=10)
    assert made.status_code == 201, made.text
    wait_until(lambda: len(scheduled(http, api)) >= 3, 30, 0.2, "three scheduled events completed")
    paused = http.post(f"{api}/schedules/heartbeat/pause", timeout=10)
    assert paused.status_code == 200 and paused.json()["paused"] is True
    schedule = http.get(f"{api}/schedules/heartbeat", timeout=10).json()
    fired = [tick for tick in schedule["ticks"] if tick["result"] == "fired"]
    assert len(fired) >= 3 and schedule["counts"]["fired"] == len(fired)
    event = http.get(f"{api}/events/{fired[0]['event_id']}", timeout=10).json()
    assert event["status"] == "completed" and event["outputs"] == EXAMPLE_RESULT
    assert event["schedule"]["name"] == "heartbeat"
    assert datetime.fromisoformat(event["schedule"]["tick"]) == datetime.fromisoformat(made.json()["next_run"])
    # Paused: no tick fires (one being sent as the pause came is at most one more)
    sent = http.get(f"{api}/events", params={"workflow": "process-text"}, timeout=10).json()["total"]
    time.sleep(2.5)
    assert http.get(f"{api}/events", params={"workflow": "process-text"}, timeout=10).json()["total"] <= sent + 1
    page = http.get(f"{api}/ui/schedules", timeout=10).text
    assert "heartbeat" in page and "paused" in page and "fired" in page

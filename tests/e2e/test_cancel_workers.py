"""Cancel and pause across processes: a gunicorn API and two `machinery worker` processes sharing one
MongoDB-speaking store (MACHINERY_TEST_MONGO_URI, or the wire-protocol test server over mongomock), so
that a cancel or a pause sent to the API stops or holds work another process runs."""

from __future__ import annotations

import time

import pytest

from machinery.serving import ServerThread
from tests.e2e.conftest import worker_env
from tests.e2e.test_cancel import INTS, register, slow_service, step_records, tree
from tests.support.processes import gunicorn_api, start_worker, stop, wait_until

pytestmark = pytest.mark.e2e



@pytest.fixture
def env(shared_uri):
    return worker_env(shared_uri)


@pytest.fixture
def service():
    server = ServerThread(slow_service()).start()
    yield server.url.rstrip("/")
    server.stop()


@pytest.fixture
def workers(env):
    started = [start_worker(env, "--threads", "2") for _ in range(2)]
    yield started
    for process in started:
        stop(process)


def test_a_cancel_sent_to_the_api_stops_a_map_a_worker_process_runs(http, env, service, workers):
    with gunicorn_api(env) as api:
        register(http, api, service, delay=0.15)
        tree(http, api, "many", [{"id": "each", "map": "values", "as": "v", "max_concurrency": 2,
                                  "steps": [{"id": "one", "call": "slow", "in": {"n": "v"}}]}], inputs=[INTS])
        sent = http.post(f"{api}/e/many?mode=async", json={"values": list(range(60))}, timeout=10).json()
        wait_until(lambda: len(http.get(f"{service}/starts", timeout=5).json()) >= 4, 30, message="items started")

        cancelled = http.post(f"{api}/events/{sent['event_id']}/cancel", timeout=30)
        answered = time.time()

        assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
        final = wait_until(lambda: (e := http.get(f"{api}/events/{sent['event_id']}", timeout=10).json())[
            "cancelled"]["in_flight"] is False and e, 30, message="the worker recorded what was in flight")
        time.sleep(0.5)
        starts = http.get(f"{service}/starts", timeout=5).json()
        assert [n for at, n in starts if at > answered] == []
        assert len(starts) < 60
        assert sorted(record["item"] for record in step_records(http, api, sent["event_id"])) == sorted(
            n for _, n in starts)
        assert final["status"] == "cancelled"
        assert "/worker-" in final["claims"][-1]["owner"]  # a worker process ran it, not the API


def test_a_paused_workflow_holds_its_events_from_every_worker_until_resumed(http, env, service, workers):
    with gunicorn_api(env) as api:
        register(http, api, service)
        tree(http, api, "held", [{"id": "one", "call": "slow", "in": {"n": "n"}}])
        assert http.post(f"{api}/workflows/held/pause", timeout=10).status_code == 200
        sent = [http.post(f"{api}/e/held?mode=async", json={"n": n}, timeout=10).json()["event_id"]
                for n in range(4)]
        time.sleep(1.0)  # the workers poll every 0.05 s: they would have started them by now
        assert [http.get(f"{api}/events/{event_id}", timeout=10).json()["status"] for event_id in sent] == [
            "pending"] * 4
        assert http.get(f"{service}/starts", timeout=5).json() == []

        assert http.post(f"{api}/workflows/held/resume", timeout=10).json()["events_released"] == 4

        wait_until(lambda: all(http.get(f"{api}/events/{event_id}", timeout=10).json()["status"] == "completed"
                               for event_id in sent), 30, message="all four completed")
        assert sorted(n for _, n in http.get(f"{service}/starts", timeout=5).json()) == [0, 1, 2, 3]

"""A bulk retry across processes: gunicorn and two `machinery worker` processes sharing one store take
over a job whose holder died mid-page, and every event is retried once (see test_workers.py for the store)."""

from __future__ import annotations

import pytest

from machinery.runtime import bulk
from machinery.serving import ServerThread
from machinery.store import utcnow
from tests.e2e.test_bulk import TEXT, counting_service
from tests.e2e.test_workers import env, store  # noqa: F401 - the shared store's fixtures
from tests.support.processes import gunicorn_api, start_worker, stop, wait_until

pytestmark = pytest.mark.e2e
EVENTS = 60


@pytest.fixture
def gate():
    app = counting_service()
    server = ServerThread(app).start()
    yield server.url.rstrip("/"), app
    server.stop()


def test_worker_processes_finish_a_job_whose_holder_died_and_retry_each_event_once(http, env, store, gate):  # noqa: F811
    url, service = gate
    with gunicorn_api(env) as api:
        # GIVEN 60 events failed at a broken service, then the service fixed
        assert http.post(f"{api}/services", json={"name": "gate", "address": f"{url}/gate", "inputs": TEXT,
                                                  "outputs": TEXT, "retry": {"max_attempts": 1}},
                         timeout=30).status_code == 201
        assert http.post(f"{api}/workflows", json={"name": "gated", "services": ["gate"], "inputs": TEXT,
                                                   "outputs": TEXT}, timeout=30).status_code == 201
        for number in range(EVENTS):
            assert http.post(f"{api}/e/gated", json={"message": f"m{number}"}, timeout=30).status_code == 502
        service.config["broken"] = False
        # AND a retry job whose first holder took a page, retried 5 of its events and died (no worker yet)
        made = http.post(f"{api}/events/bulk", json={"action": "retry", "filter": {"status": "failed"}}, timeout=30)
        assert made.status_code == 202
        job_id = made.json()["job_id"]
        job = bulk.take_page(store, store.bulk_jobs.claim("dead-holder", 2.0, utcnow()), "dead-holder", 2.0)
        early = job["in_flight"][:5]
        for event_id in early:
            assert bulk.apply_one(store, job, event_id) == ("done", None)
        # WHEN two worker processes start
        workers = [start_worker(env, "--threads", "2") for _ in range(2)]
        try:
            # THEN one of them takes the job over once the lease expires and completes it
            finished = wait_until(lambda: (j := http.get(f"{api}/events/bulk/{job_id}", timeout=30).json())
                                  ["status"] == "completed" and j, 120, 0.2, "job completed")
            wait_until(lambda: store.count_events("completed") == EVENTS, 240, 0.5, "every event completed")
        finally:
            for worker in workers:
                assert stop(worker) == 0
    assert (finished["done"], finished["skipped"], finished["failed"], finished["claims"]) == (EVENTS, 0, 0, 2)
    # AND the service served each event exactly once after the fix (one failed call, one served, each)
    assert len(service.config["served"]) == EVENTS and set(service.config["served"].values()) == {1}
    assert set(service.config["calls"].values()) == {2}
    for document in store.events.find({}, {"runs": 1}):
        assert [run.get("bulk_job") for run in document["runs"]] == [job_id]

"""`machinery serve` under gunicorn: several workers, metrics summed across them, start without MongoDB."""

from __future__ import annotations

import json

import pytest

from machinery.serving import free_port
from tests.conftest import DEFINITIONS, EXAMPLE_RESULT, EXAMPLE_TEXT
from tests.ops.procs import value
from tests.support.processes import MACHINERY, clean_env, serving, wait_until

pytestmark = pytest.mark.e2e


def serve(port: int, *extra: str) -> list[str]:
    return [*MACHINERY, "serve", "--bind", f"127.0.0.1:{port}", *extra]


def test_two_workers_answer_and_a_scrape_of_either_sums_both():
    # GIVEN the API under gunicorn with 2 workers (each with its own embedded store: read-only paths only)
    port = free_port()
    env = clean_env(MACHINERY_MONGO_URI="mongomock://localhost/machinery")
    with serving(serve(port, "--workers", "2", "--threads", "2", "--split-embedded-store"), port, env) as api:
        probes = {"method": "GET", "endpoint": "/healthcheck", "status": "204"}
        counted = value(api.get("/metrics").text, "machinery_http_request_duration_seconds_count", **probes)
        # WHEN probes, docs and scrapes are asked for on fresh connections (gunicorn spreads them)
        for _ in range(20):
            assert api.get("/healthcheck").status_code == 204
        ready = api.get("/readyz")
        docs = api.get("/openapi.json")
        scrapes = [api.get("/metrics") for _ in range(4)]

        # THEN every one answers, and every scrape counts all 20 probes whichever worker answered them
        assert ready.status_code == 200 and ready.json()["status"] == "ready"
        assert docs.status_code == 200 and "/e/{workflow_ref}" in docs.json()["paths"]
        for scrape in scrapes:
            assert scrape.status_code == 200
            assert value(scrape.text, "machinery_http_request_duration_seconds_count", **probes) == counted + 20
        assert "WARNING" in api.output() and "OWN embedded store" in api.output()


def test_the_embedded_store_refuses_two_workers_without_the_explicit_override():
    from tests.support.processes import run

    result = run(serve(free_port(), "--workers", "2"),
                 clean_env(MACHINERY_MONGO_URI="mongomock://localhost/machinery"))
    assert result.returncode != 0
    assert "embedded store lives in one process" in result.stderr and "Traceback" not in result.stderr


def test_metrics_move_after_events(example_services):
    # GIVEN one worker with the example services registered
    port = free_port()
    env = clean_env(MACHINERY_MONGO_URI="mongomock://localhost/machinery")
    with serving(serve(port, "--workers", "1"), port, env) as api:
        for path in sorted(DEFINITIONS.glob("service-*.json")):
            service = json.loads(path.read_text())
            service["address"] = example_services[service["name"]]
            assert api.post("/services", json=service).status_code == 201
        for path in sorted(DEFINITIONS.glob("workflow-*.json")):
            assert api.post("/workflows", json=json.loads(path.read_text())).status_code == 201
        before = api.get("/metrics").text

        # WHEN an event runs through process-text
        answer = api.post("/e/process-text", json={"data": {"message": EXAMPLE_TEXT}})

        # What a sync event tells the metrics, and its request's own metric, are written once its reply
        # is sent: a scrape made at once may come a moment before them, so it is made again until they are.
        def scraped():
            text = api.get("/metrics").text
            told = all(value(text, name, **labels) > value(before, name, **labels) for name, labels in (
                ("machinery_events_finished_total", {"workflow": "process-text", "status": "completed"}),
                ("machinery_http_request_duration_seconds_count",
                 {"method": "POST", "endpoint": "/e/<workflow_ref>", "status": "201"})))
            return text if told else None

        after = wait_until(scraped, 10, message="the event's metrics written")

    # THEN it completed, and the counters moved by one event, three steps, three calls
    assert answer.status_code == 201 and answer.json()["outputs"] == EXAMPLE_RESULT

    def moved(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    assert moved("machinery_events_received_total", workflow="process-text", mode="sync") == 1
    assert moved("machinery_events_finished_total", workflow="process-text", status="completed") == 1
    for service in ("upper", "reverse", "space-counter"):
        assert moved("machinery_service_calls_total", service=service, outcome="ok") == 1
        assert moved("machinery_step_duration_seconds_count", service=service, status="completed") == 1
    assert moved("machinery_http_request_duration_seconds_count",
                 method="POST", endpoint="/e/<workflow_ref>", status="201") == 1
    assert value(after, "machinery_store_up") == 1
    assert value(after, "machinery_events_active", status="running") == 0


def test_the_api_starts_while_mongodb_is_not_reachable_and_says_it_is_not_ready():
    # GIVEN a MongoDB URI naming a closed port
    port = free_port()
    env = clean_env(MACHINERY_MONGO_URI=f"mongodb://127.0.0.1:{free_port()}/machinery",
                    MACHINERY_MONGO_TIMEOUT_MS="200")
    # WHEN the API is served on it
    with serving(serve(port, "--workers", "1"), port, env) as api:
        ready, services, scrape = api.get("/readyz"), api.get("/services"), api.get("/metrics")
    # THEN it is alive, not ready, and every store-backed answer is a clear 503
    assert ready.status_code == 503 and ready.headers["Retry-After"]
    assert ready.json()["code"] == 503 and "store is unavailable" in ready.json()["message"]
    assert services.status_code == 503 and services.json()["status"] == "Service Unavailable"
    assert scrape.status_code == 200 and value(scrape.text, "machinery_store_up") == 0

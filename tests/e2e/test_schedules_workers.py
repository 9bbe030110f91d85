"""Schedules across processes: three `machinery worker` processes and the API share one store, and an
every-second schedule's ticks each become exactly one event, none twice and none missing."""

from __future__ import annotations

from collections import Counter
from datetime import UTC, datetime, timedelta

import pytest

from tests.e2e.conftest import register_examples_over_http
from tests.e2e.test_workers import env, store  # noqa: F401 - the shared store's fixtures
from tests.support.processes import gunicorn_api, start_worker, stop, wait_until

pytestmark = pytest.mark.e2e

TICKS = 12  # the run lasts until this many ticks have fired (about as many seconds), more than a schedule keeps


def test_a_schedule_fires_exactly_once_per_tick_with_three_workers_running(http, env, store,  # noqa: F811
                                                                            example_services):
    workers = [start_worker(env, "--threads", "2") for _ in range(3)]
    stopped = False
    try:
        with gunicorn_api(env) as api:
            register_examples_over_http(http, api, example_services)
            # queue, so that a tick is never skipped because the event before it is still running
            made = http.post(f"{api}/schedules", json={
                "name": "every-second", "workflow": "process-text", "data": {"message": "tick tock"},
                "every_s": 1, "overlap": "queue"}, timeout=10)
            assert made.status_code == 201, made.text
            first_tick = datetime.fromisoformat(made.json()["next_run"])

            def fired():
                return (store.get_schedule("every-second").get("counts") or {}).get("fired", 0)
            wait_until(lambda: fired() >= TICKS, 90, 0.2, f"{TICKS} ticks fired")
            wait_until(lambda: store.events.count_documents({"schedule.name": "every-second",
                                                             "status": "completed"}) >= TICKS - 2,
                       60, 0.2, "the ticks' events completed")
        # Stopped gracefully, each worker ends what it was doing: a tick it was firing is recorded.
        codes = [stop(worker) for worker in workers]
        stopped = True
        assert codes == [0, 0, 0]
    finally:
        if not stopped:
            for worker in workers:
                stop(worker)
    schedule = store.get_schedule("every-second")
    ticks = [document["schedule"]["tick"].replace(tzinfo=UTC) for document in
             store.events.find({"schedule.name": "every-second"}, {"schedule": 1})]
    counted = Counter(ticks)
    assert [tick for tick, n in counted.items() if n > 1] == [], "a tick sent twice"
    # Every tick from the first to the one before next_run has its event: none missing, none extra.
    expected, tick = [], first_tick
    while tick < schedule["next_run"]:
        expected.append(tick)
        tick += timedelta(seconds=1)
    assert sorted(ticks) == expected
    assert len(ticks) >= TICKS and schedule["counts"]["fired"] == len(ticks)
    assert all(entry["result"] == "fired" for entry in schedule["ticks"]), schedule["ticks"]
    assert len(schedule["ticks"]) == 10  # kept bounded, while counts keeps the whole tally
    by = Counter(entry["by"] for entry in schedule["ticks"])
    assert set(by) <= {owner.rsplit("/", 1)[0] for document in store.events.find({}, {"claims": 1})
                       for owner in [claim["owner"] for claim in document.get("claims") or []]}

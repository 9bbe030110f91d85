"""Bulk actions: a dry run counts, a job applies the action page by page, resumes after a crash, and acts
on each event once; bad requests are refused naming what is wrong, with the store unchanged."""

from __future__ import annotations

from datetime import timedelta

import pytest

from machinery.runtime import bulk
from machinery.serving import ServerThread
from machinery.store import utcnow
from tests.support.fakes import faulty_service

TEXT = [{"name": "message", "type": "string"}]


@pytest.fixture
def gate():
    """The misbehaving service: /toggle fails (503) until app.config["broken"] is False."""
    app = faulty_service()
    server = ServerThread(app).start()
    yield server.url.rstrip("/"), app
    server.stop()


@pytest.fixture
def failing(client, gate):
    """A workflow `gated` over /toggle (no retries), and a function sending n events to it (sync)."""
    url, app = gate
    service = {"name": "gate", "address": f"{url}/toggle", "retry": {"max_attempts": 1}, "inputs": TEXT,
               "outputs": TEXT}
    assert client.post("/services", json=service).status_code == 201
    workflow = {"name": "gated", "services": ["gate"], "inputs": TEXT + [{"name": "customer", "type": "string"}],
                "outputs": TEXT, "search": ["customer"]}
    assert client.post("/workflows", json=workflow).status_code == 201

    def send(count: int, customer: str = "c1") -> list[str]:
        ids = []
        for number in range(count):
            answer = client.post("/e/gated", json={"message": f"m{number}", "customer": customer})
            assert answer.status_code in (201, 502), answer.get_json()
            ids.append(answer.get_json()["event_id"])
        return ids
    return send, app


def snapshot(store) -> tuple:
    return (store.db["bulk_jobs"].count_documents({}),
            sorted((str(e["_id"]), e["status"], e.get("run", 0)) for e in store.db["events"].find({})))


def run_all(store, job_id, owner="runner"):
    job = store.bulk_jobs.claim(owner, 30.0, utcnow())
    assert job is not None and job["job_id"] == job_id
    return bulk.run_job(store, job, owner, 30.0)


def test_a_dry_run_counts_what_matches_and_changes_nothing(client, store, failing):
    # GIVEN 12 failed events and 3 completed ones
    send, app = failing
    failed = send(12)
    app.config["broken"] = False
    send(3)
    before = snapshot(store)
    # WHEN a retry of the workflow's events is dry run
    answer = client.post("/events/bulk", json={"action": "retry", "filter": {"workflow": "gated"}, "dry_run": True})
    # THEN it counts 15 matching, 12 the retry applies to, shows the newest ids, and stores nothing
    assert answer.status_code == 200, answer.get_json()
    body = answer.get_json()
    assert (body["matched"], body["applicable"], body["applies_to"]) == (15, 12, ["failed"])
    assert len(body["sample"]) == 10 and failed[-1] not in body["sample"][:3]
    assert snapshot(store) == before
    # AND with the status in the filter both counts are the failed ones
    only = client.post("/events/bulk", json={"action": "retry", "filter": {"workflow": "gated", "status": "failed"},
                                             "dry_run": True}).get_json()
    assert (only["matched"], only["applicable"]) == (12, 12) and set(only["sample"]) <= set(failed)


def test_a_retry_job_queues_each_failed_event_once_and_skips_the_others_saying_why(client, store, failing):
    # GIVEN 25 failed and 4 completed events
    send, app = failing
    failed = send(25)
    app.config["broken"] = False
    completed = send(4)
    # WHEN a retry job is made and run
    answer = client.post("/events/bulk", json={"action": "retry", "filter": {"workflow": "gated"}})
    assert answer.status_code == 202, answer.get_json()
    job_id = answer.get_json()["job_id"]
    assert answer.headers["Location"].endswith(f"/events/bulk/{job_id}")
    assert answer.get_json()["status"] == "pending" and answer.get_json()["matched"] == 29
    run_all(store, job_id)
    # THEN the job is complete: 25 done, 4 skipped because they completed
    job = client.get(f"/events/bulk/{job_id}").get_json()
    assert (job["status"], job["done"], job["skipped"], job["failed"], job["progress"]) == ("completed", 25, 4, 0, 1.0)
    assert job["skipped_why"] == [{"why": "completed: retry applies to failed events", "count": 4}]
    assert {entry["event_id"] for entry in job["samples"]["skipped"]} == set(completed)
    # AND every failed event is pending for a worker, its new run marked with the job
    for event_id in failed:
        event = store.get_event(event_id)
        assert event["status"] == "pending" and [run.get("bulk_job") for run in event["runs"]] == [job_id]
    assert client.get("/events/bulk").get_json()["items"][0]["job_id"] == job_id


def test_a_job_resumes_after_a_crash_and_acts_on_no_event_twice(client, store, failing, monkeypatch):
    # GIVEN 25 failed events and a retry job over pages of 10
    send, _ = failing
    failed = send(25)
    monkeypatch.setattr(bulk, "PAGE_SIZE", 10)
    job_id = client.post("/events/bulk", json={"action": "retry", "filter": {"status": "failed"}}).get_json()["job_id"]
    # WHEN a first holder records one page, then takes the next, acts on three of its events and crashes
    job = store.bulk_jobs.claim("first", 30.0, utcnow())
    job = bulk.run_page(store, job, "first", 30.0)
    assert (job["done"], job["pages"]) == (10, 1)
    job = bulk.take_page(store, job, "first", 30.0)
    for event_id in job["in_flight"][:3]:
        assert bulk.apply_one(store, job, event_id) == ("done", None)
    # AND nobody can take the job while its lease holds; once it expires, a second holder does
    assert store.bulk_jobs.claim("second", 30.0, utcnow()) is None
    later = utcnow() + timedelta(seconds=31)
    job = store.bulk_jobs.claim("second", 30.0, later)
    assert job["lease_owner"] == "second"
    bulk.run_job(store, job, "second", 30.0)
    # THEN the first holder's late page is refused, and the job counts each event once
    assert not store.bulk_jobs.record_page(job_id, "first", None, {"$inc": {"done": 1}})
    job = client.get(f"/events/bulk/{job_id}").get_json()
    assert (job["status"], job["done"], job["skipped"], job["handled"], job["claims"]) == ("completed", 25, 0, 25, 2)
    # AND each event has exactly one run, the job's
    for event_id in failed:
        assert [run.get("bulk_job") for run in store.get_event(event_id)["runs"]] == [job_id]


def test_a_replay_job_replays_finished_events_from_the_first_step(client, store, failing):
    send, app = failing
    app.config["broken"] = False
    done = send(3)
    made = client.post("/events/bulk", json={"action": "replay", "filter": {"workflow": "gated"}})
    job_id = made.get_json()["job_id"]
    run_all(store, job_id)
    assert client.get(f"/events/bulk/{job_id}").get_json()["done"] == 3
    for event_id in done:
        event = store.get_event(event_id)
        assert event["status"] == "pending" and event["runs"][-1]["from_step"] == 0


def test_filters_by_time_error_kind_failed_step_and_attributes(client, store, failing):
    # GIVEN failed events of two customers
    send, _ = failing
    first = send(4, "c1")
    middle = utcnow()
    send(3, "c2")

    def matched(**given):
        answer = client.post("/events/bulk", json={"action": "retry", "filter": given, "dry_run": True})
        assert answer.status_code == 200, answer.get_json()
        return answer.get_json()["matched"]
    # THEN each filter counts what it names
    kind = store.get_event(first[0])["error"]["kind"]
    assert matched(attrs={"customer": "c1"}) == 4
    assert matched(workflow="gated", attrs={"customer__ne": "c1"}) == 3
    assert matched(created_after=middle.isoformat() + "Z") == 3
    assert matched(created_before=middle.isoformat() + "+00:00") == 4
    assert matched(error_kind=kind) == 7 and matched(error_kind="nothing-like-it") == 0
    assert matched(failed_step="step-0") == 7 and matched(failed_step="step-1") == 0


@pytest.mark.parametrize("body, named", [
    ({"action": "explode"}, "action"),
    ({"action": "retry", "filter": {"status": "nope"}}, "filter.status"),
    ({"action": "retry", "filter": {"colour": "red"}}, "filter.colour"),
    ({"action": "retry", "filter": {"workflow": "no-such"}}, "filter.workflow"),
    ({"action": "retry", "filter": {"created_after": "yesterday"}}, "filter.created_after"),
    ({"action": "retry", "filter": {"created_after": "2030-01-02T00:00:00Z",
                                    "created_before": "2030-01-01T00:00:00Z"}}, "filter.created_after"),
    ({"action": "retry", "filter": {"workflow": "gated", "attrs": {"nope": 1}}}, "filter.attrs.nope"),
    ({"action": "retry", "filter": {"attrs": {"customer__about": 1}}}, "filter.attrs.customer__about"),
    ({"action": "retry", "filter": {"failed_step": ["x"]}}, "filter.failed_step"),
    ({"action": "retry", "dry_run": "yes"}, "dry_run"),
    ({"action": "retry", "from_step": "step-0"}, "from_step"),
    ({"action": "retry", "extra": 1}, "extra"),
    ({"action": "cancel", "filter": {"status": "bogus"}}, "filter.status"),
    (["retry"], "body"),
])
def test_a_bad_request_is_refused_naming_it_and_the_store_is_unchanged(client, store, failing, body, named):
    send, _ = failing
    send(2)
    before = snapshot(store)
    answer = client.post("/events/bulk", json=body)
    assert answer.status_code == 422, answer.get_json()
    assert named in answer.get_json()["errors"]
    assert snapshot(store) == before


def test_a_bulk_cancel_cancels_each_unfinished_event_once_and_skips_the_finished(client, store, failing):
    # GIVEN 3 failed events and 5 pending ones (no worker runs them)
    send, _ = failing
    send(3)
    pending = [client.post("/e/gated?mode=async", json={"message": "later", "customer": "c9"}).get_json()["event_id"]
               for _ in range(5)]
    # WHEN every event of the workflow is cancelled in bulk, after a dry run
    dry = client.post("/events/bulk", json={"action": "cancel", "filter": {"workflow": "gated"},
                                            "dry_run": True}).get_json()
    assert (dry["matched"], dry["applicable"]) == (8, 5)
    made = client.post("/events/bulk", json={"action": "cancel", "filter": {"workflow": "gated"}})
    assert made.status_code == 202, made.get_json()
    job = run_all(store, made.get_json()["job_id"])
    # THEN the pending ones are cancelled, by the job, and the failed ones skipped saying why
    assert (job["done"], job["skipped"]) == (5, 3)
    assert bulk.shown_job(job)["skipped_why"] == [
        {"why": "failed: cancel applies to pending or running or waiting events", "count": 3}]
    for event_id in pending:
        event = store.get_event(event_id)
        assert event["status"] == "cancelled" and event["cancelled"]["by"] == bulk.canceller(job["job_id"])
    # AND a holder that finds them cancelled by this job counts them done, not skipped
    assert bulk.apply_one(store, job, pending[0]) == ("done", None)
    # AND one cancelled by someone else is a skip
    other = {**job, "job_id": "0" * 24}
    assert bulk.apply_one(store, other, pending[0])[0] == "skipped"


def test_an_unknown_job_is_a_404(client):
    assert client.get("/events/bulk/nope").status_code == 404
    assert client.get("/events/bulk/0123456789abcdef01234567").status_code == 404


def test_a_bulk_replay_of_tree_events_redoes_them_from_their_first_step(client, store):
    # GIVEN tree events failed at a service that refuses connections
    from machinery.serving import free_port

    double = {"name": "double", "address": f"http://127.0.0.1:{free_port()}/", "retry": {"max_attempts": 1},
              "inputs": [{"name": "n", "type": "int"}], "outputs": [{"name": "n", "type": "int"}]}
    assert client.post("/services", json=double).status_code == 201
    tree = {"name": "tree", "inputs": [{"name": "n", "type": "int"}], "outputs": [],
            "steps": [{"id": "twice", "call": "double"}, {"id": "again", "call": "double"}]}
    assert client.post("/workflows", json=tree).status_code == 201
    sent = [client.post("/e/tree", json={"n": n}).get_json()["event_id"] for n in range(3)]
    assert all(store.get_event(event_id)["status"] == "failed" for event_id in sent)
    # WHEN they are replayed in bulk, from the default step and from a named one
    first = client.post("/events/bulk", json={"action": "replay", "filter": {"workflow": "tree"}}).get_json()
    run_all(store, first["job_id"])
    # THEN each is pending again, its new run redoing the tree from its first step, through the replay path
    for event_id in sent:
        event = store.get_event(event_id)
        assert event["status"] == "pending" and event["runs"][-1]["from_step"] == "twice"
        assert event["runs"][-1]["redo"] and event["runs"][-1]["bulk_job"] == first["job_id"]
    # AND a step the plan does not hold is a skip saying why, for each event
    for event_id in sent:
        store.update_event(event_id, {"$set": {"status": "failed"}})
    named = client.post("/events/bulk", json={"action": "replay", "from_step": "nope",
                                              "filter": {"workflow": "tree"}}).get_json()
    job = run_all(store, named["job_id"])
    assert (job["done"], job["skipped"]) == (0, 3)
    assert "not a step of this event's plan" in bulk.shown_job(job)["skipped_why"][0]["why"]


def test_events_a_bulk_job_cancels_are_counted_where_every_ended_event_is(example_services):
    # GIVEN a Machinery whose embedded worker runs bulk jobs, and 3 events held by a paused workflow
    from machinery.app import create_app
    from machinery.serving import free_port
    from tests.conftest import register_examples
    from tests.support.processes import wait_until

    app = create_app({"MONGO_URI": f"mongomock://localhost/bulk-observed-{free_port()}", "EMBEDDED_WORKERS": 1,
                      "POLL_S": 0.05})
    client = app.test_client()
    try:
        register_examples(client, example_services)
        assert client.post("/workflows/process-text/pause").status_code == 200
        held = [client.post("/e/process-text", json={"message": "held"}).get_json()["event_id"] for _ in range(3)]
        # WHEN they are cancelled in bulk
        made = client.post("/events/bulk", json={"action": "cancel", "filter": {"workflow": "process-text"}})
        assert made.status_code == 202, made.get_json()
        job = wait_until(lambda: (j := client.get(f"/events/bulk/{made.get_json()['job_id']}").get_json())
                         ["status"] == "completed" and j, 20, message="the bulk job done")
        assert job["done"] == 3
        assert {client.get(f"/events/{event_id}").get_json()["status"] for event_id in held} == {"cancelled"}
        # THEN the metrics and the dashboard count them as cancelled
        metrics = client.get("/metrics").get_data(as_text=True)
        assert 'machinery_events_finished_total{status="cancelled",workflow="process-text"} 3.0' in metrics
        html = client.get("/ui/").get_data(as_text=True)
        row = html[html.index('<tr data-workflow="process-text">'):]
        assert "3 cancelled" in row[:row.index("</tr>")]
    finally:
        app.extensions["machinery"].close(grace_s=2)

"""The event list's search box and its bulk form, and the bulk job page, through the Flask test client."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

from machinery.runtime import bulk
from machinery.store import utcnow
from tests.api.test_bulk import failing, gate  # noqa: F401 - the fixtures
from tests.api.test_ui import page


def test_the_search_box_filters_the_list_by_attributes(client, failing):  # noqa: F811
    send, _ = failing
    c1 = send(2, "c1")
    c2 = send(3, "c2")
    body = page(client, "/ui/events?workflow=gated&q=customer%3Dc2")
    assert all(event_id in body for event_id in c2) and not any(event_id in body for event_id in c1)
    assert 'value="customer=c2"' in body
    assert '<span class="attr mono small">customer=c2</span>' in body  # each row shows its attributes
    refused = page(client, "/ui/events?workflow=gated&q=nope%3D1")
    assert "not a search path of this workflow" in refused and "No event matches" in refused


def test_a_dry_run_then_act_makes_a_job_whose_page_shows_its_progress(client, store, failing):  # noqa: F811
    # GIVEN 4 failed events of customer c1 and 2 of c2
    send, _ = failing
    c1 = send(4, "c1")
    send(2, "c2")
    form = {"workflow": "gated", "status": "", "q": "customer=c1", "action": "retry"}
    # WHEN the list's bulk form is dry run
    counted = client.post("/ui/events/bulk", data={**form, "go": "count"})
    assert counted.status_code == 303
    shown = page(client, counted.headers["Location"])
    # THEN the list shows the count, with a button to act on all of them, and nothing is stored
    assert "4 match; retry applies to 4" in shown and "Retry all 4" in shown
    assert store.db["bulk_jobs"].count_documents({}) == 0
    assert parse_qs(urlsplit(counted.headers["Location"]).query)["q"] == ["customer=c1"]
    # WHEN it acts THEN it lands on the job's page, which refreshes while the job runs
    acted = client.post("/ui/events/bulk", data={**form, "go": "act"})
    assert acted.status_code == 303 and "/ui/bulk/" in acted.headers["Location"]
    job_page = page(client, acted.headers["Location"])
    assert 'data-refresh="2"' in job_page and 'data-field="matched">4<' in job_page
    # AND once the job has run, its page shows the result and stops refreshing
    job_id = acted.headers["Location"].rsplit("/", 1)[-1]
    bulk.run_job(store, store.bulk_jobs.claim("ui-test", 30.0, utcnow()), "ui-test", 30.0)
    done = page(client, f"/ui/bulk/{job_id}")
    assert 'data-refresh' not in done and 'data-field="done">4<' in done and all(e in done for e in c1)
    assert job_id in page(client, "/ui/bulk")


def test_a_refused_bulk_request_is_shown_on_the_list(client, store, failing):  # noqa: F811
    answer = client.post("/ui/events/bulk", data={"workflow": "gated", "action": "explode", "go": "count"})
    assert answer.status_code == 303
    assert "action must be one of" in page(client, answer.headers["Location"])
    assert store.db["bulk_jobs"].count_documents({}) == 0


def test_a_bulk_form_from_another_site_is_refused(client, store, failing):  # noqa: F811
    answer = client.post("/ui/events/bulk", data={"action": "retry", "go": "act"},
                         headers={"Origin": "https://evil.example"})
    assert answer.status_code == 403 and store.db["bulk_jobs"].count_documents({}) == 0

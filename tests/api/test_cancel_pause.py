"""Cancel and pause through the Flask test client: the API, the UI's forms, who is recorded, and what a
store holds after each (no workers run here: async events stay pending)."""

from __future__ import annotations

import pytest

from machinery.runtime import cancel
from machinery.store import HELD
from tests.security.conftest import ADMIN_KEY, API_KEYS, DEAD_ADDRESS, READ_KEY, bearer, make_app

SERVICE = {"name": "up", "address": DEAD_ADDRESS, "inputs": [{"name": "message", "type": "string"}],
           "outputs": [{"name": "message", "type": "string"}]}
WORKFLOW = {"name": "w", "services": ["up"], "inputs": [{"name": "message", "type": "string"}],
            "outputs": [{"name": "message", "type": "string"}]}


@pytest.fixture
def registered(client):
    assert client.post("/services", json=SERVICE).status_code == 201
    assert client.post("/workflows", json=WORKFLOW).status_code == 201
    return client


def queue(client, message="hi"):
    reply = client.post("/e/w?mode=async", json={"message": message})
    assert reply.status_code == 202
    return reply.get_json()["event_id"]


def test_a_pending_event_is_cancelled_at_once_with_who_when_and_why(registered, store):
    event_id = queue(registered)

    reply = registered.post(f"/events/{event_id}/cancel", json={"reason": "sent by mistake"})

    assert reply.status_code == 200
    body = reply.get_json()
    assert body["status"] == "cancelled" and body["finished_at"]
    assert body["cancelled"]["by"] == "anonymous" and body["cancelled"]["reason"] == "sent by mistake"
    assert body["cancelled"]["previous_status"] == "pending" and body["cancelled"]["in_flight"] is False
    assert store.claim_event("tester", 30) is None  # no claim takes it


def test_an_empty_body_is_a_cancel_without_reason(registered):
    event_id = queue(registered)
    reply = registered.post(f"/events/{event_id}/cancel")
    assert reply.status_code == 200 and reply.get_json()["cancelled"]["reason"] is None


@pytest.mark.parametrize("body, field", [({"reason": 3}, "reason"), ({"reason": "x" * 501}, "reason")])
def test_a_bad_reason_is_422_and_the_event_is_unchanged(registered, store, body, field):
    event_id = queue(registered)
    before = store.get_event(event_id)

    reply = registered.post(f"/events/{event_id}/cancel", json=body)

    assert reply.status_code == 422 and field in reply.get_json()["errors"]
    assert store.get_event(event_id) == before


def test_the_api_keys_name_is_who_cancelled_and_a_read_key_may_not():
    app = make_app(API_KEYS=API_KEYS)
    client = app.test_client()
    try:
        assert client.post("/services", json=SERVICE, headers=bearer(ADMIN_KEY)).status_code == 201
        assert client.post("/workflows", json=WORKFLOW, headers=bearer(ADMIN_KEY)).status_code == 201
        event_id = client.post("/e/w?mode=async", json={"message": "x"}, headers=bearer(ADMIN_KEY)).get_json()[
            "event_id"]

        refused = client.post(f"/events/{event_id}/cancel", headers=bearer(READ_KEY))
        paused = client.post("/workflows/w/pause", headers=bearer(READ_KEY))
        done = client.post(f"/events/{event_id}/cancel", headers=bearer(ADMIN_KEY))

        assert refused.status_code == 403 and paused.status_code == 403
        assert done.status_code == 200 and done.get_json()["cancelled"]["by"] == "key #1 (admin)"
    finally:
        app.extensions["machinery"].close(grace_s=1)


def test_pause_holds_queued_and_new_events_and_resume_releases_them_in_order(registered, store):
    before = queue(registered, "before")

    paused = registered.post("/workflows/w/pause")
    during = [queue(registered, f"during {n}") for n in range(3)]
    sync = registered.post("/e/w", json={"message": "sync"})

    assert paused.status_code == 200 and paused.get_json()["events_held"] == 1
    assert sync.status_code == 202 and sync.get_json()["status"] == "pending"
    held = [store.get_event(event_id) for event_id in [before, *during, sync.get_json()["event_id"]]]
    assert all(event["held"] == "paused" and event["lease_expires"].replace(tzinfo=None) == HELD for event in held)
    assert store.claim_event("tester", 30) is None

    resumed = registered.post("/workflows/w/resume")

    assert resumed.status_code == 200 and resumed.get_json()["events_released"] == 5
    claimed = [store.claim_event("tester", 30)["event_id"] for _ in range(5)]
    assert claimed == [event["event_id"] for event in held]


def test_an_event_stored_held_after_a_resume_is_released(registered, store):
    # The resume's release ran before this event was stored with the pause it had read.
    event_id = queue(registered)
    store.update_event(event_id, {"$set": {"held": "paused", "lease_expires": HELD}})

    cancel.recheck_held(store, store.get_event(event_id))

    assert store.get_event(event_id).get("held") is None
    assert store.claim_event("tester", 30)["event_id"] == event_id


@pytest.mark.parametrize("path", ["/workflows/ghost/pause", "/workflows/ghost/resume"])
def test_pause_or_resume_of_an_unknown_workflow_is_404(registered, path):
    reply = registered.post(path)
    assert reply.status_code == 404 and "ghost" in reply.get_json()["message"]


def test_pause_twice_is_409_and_changes_nothing(registered, store):
    registered.post("/workflows/w/pause")
    before = store.get_workflow("w")
    again = registered.post("/workflows/w/pause")
    assert again.status_code == 409 and "already paused" in again.get_json()["message"]
    assert store.get_workflow("w") == before


def test_a_new_version_of_a_paused_workflow_stays_paused(registered, store):
    registered.post("/workflows/w/pause")
    assert registered.post("/workflows", json={**WORKFLOW, "description": "v2"}).status_code == 200
    assert registered.get("/workflows/w").get_json()["paused"]["by"] == "anonymous"


def test_paused_is_not_accepted_in_a_definition(registered):
    reply = registered.post("/workflows", json={**WORKFLOW, "paused": {"by": "me"}})
    assert reply.status_code == 422 and "paused" in reply.get_json()["errors"]


def test_the_status_filter_knows_cancelled(registered):
    event_id = queue(registered)
    registered.post(f"/events/{event_id}/cancel")
    listed = registered.get("/events?status=cancelled").get_json()
    assert [item["event_id"] for item in listed["items"]] == [event_id]


def test_the_event_page_cancels_with_its_form(registered):
    event_id = queue(registered)
    page = registered.get(f"/ui/events/{event_id}").get_data(as_text=True)
    assert f'action="/ui/events/{event_id}/cancel"' in page

    reply = registered.post(f"/ui/events/{event_id}/cancel")

    assert reply.status_code == 303
    shown = registered.get(f"/ui/events/{event_id}").get_data(as_text=True)
    assert "Cancelled by <strong>anonymous</strong>" in shown and "/cancel" not in shown
    again = registered.post(f"/ui/events/{event_id}/cancel")
    assert again.status_code == 409 and "is cancelled" in again.get_data(as_text=True)


def test_the_cancel_form_refuses_a_post_from_another_site(registered, store):
    event_id = queue(registered)
    reply = registered.post(f"/ui/events/{event_id}/cancel", headers={"Origin": "http://elsewhere.example"})
    assert reply.status_code == 403 and store.get_event(event_id)["status"] == "pending"


def test_the_workflow_page_pauses_and_resumes(registered):
    workflow_id = registered.get("/workflows/w").get_json()["workflow_id"]
    page = registered.get("/ui/workflows/w").get_data(as_text=True)
    assert f'action="/ui/workflows/{workflow_id}/pause"' in page

    assert registered.post(f"/ui/workflows/{workflow_id}/pause").status_code == 303
    paused = registered.get("/ui/workflows/w").get_data(as_text=True)
    assert f'action="/ui/workflows/{workflow_id}/resume"' in paused and "by anonymous" in paused
    assert registered.post(f"/ui/workflows/{workflow_id}/pause").status_code == 409

    assert registered.post(f"/ui/workflows/{workflow_id}/resume").status_code == 303
    assert registered.get("/workflows/w").get_json()["paused"] is None


def test_the_served_spec_lists_cancelled_and_the_new_operations(client):
    spec = client.get("/openapi.json").get_json()
    assert "cancelled" in spec["components"]["schemas"]["EventAck"]["properties"]["status"]["enum"]
    for path in ("/events/{event_id}/cancel", "/workflows/{ref}/pause", "/workflows/{ref}/resume"):
        assert "post" in spec["paths"][path]


def test_a_running_event_whose_holder_died_is_cancelled_with_nothing_in_flight(registered, store):
    event_id = queue(registered)
    store.claim_event("died", -1)  # its lease has expired: the process holding it is gone

    body = registered.post(f"/events/{event_id}/cancel").get_json()

    assert body["cancelled"]["previous_status"] == "running" and body["cancelled"]["in_flight"] is False
    assert store.get_event(event_id)["lease_owner"] is None


def test_a_running_event_keeps_its_holder_until_the_holder_settles_it(registered, store):
    event_id = queue(registered)
    store.claim_event("holder", 30)

    body = registered.post(f"/events/{event_id}/cancel").get_json()

    assert body["cancelled"]["in_flight"] is True and store.get_event(event_id)["lease_owner"] == "holder"
    assert cancel.settle(store, event_id, "other", {"$set": {"next_step": 1}}) is False
    assert cancel.settle(store, event_id, "holder", {"$set": {"next_step": 1, "status": "completed"}}) is True
    settled = store.get_event(event_id)
    assert settled["status"] == "cancelled" and settled["next_step"] == 1 and settled["lease_owner"] is None
    assert settled["cancelled"]["in_flight"] is False


def test_a_holder_that_dies_before_it_settles_leaves_nothing_shown_in_flight_once_its_lease_expires(
        registered, store):
    event_id = queue(registered)
    store.claim_event("holder", 30)
    assert registered.post(f"/events/{event_id}/cancel").get_json()["cancelled"]["in_flight"] is True
    assert registered.get(f"/events/{event_id}").get_json()["cancelled"]["in_flight"] is True

    store.events.update_one({"_id": store.events.find_one()["_id"]},
                            {"$set": {"lease_expires": cancel.EPOCH}})  # the holder was killed: its lease ran out

    body = registered.get(f"/events/{event_id}").get_json()
    assert body["status"] == "cancelled" and body["cancelled"]["in_flight"] is False
    assert store.get_event(event_id)["cancelled"]["in_flight"] is True  # shown as it is now, not rewritten


def test_a_step_in_flight_too_large_for_the_record_still_lets_the_cancelled_event_go():
    from machinery.exceptions import TooLarge

    class FullStore:
        def __init__(self):
            self.writes = []

        def update_event(self, event_id, update, owner=None, expect=None):
            self.writes.append(update)
            if "$push" in update:
                raise TooLarge("past 16 MiB")
            return True

    store = FullStore()

    assert cancel.settle(store, "e1", "holder", {"$set": {"next_step": 1}, "$push": {"steps": {"big": "x"}}})

    assert store.writes[-1] == {"$set": {"lease_owner": None, "lease_expires": cancel.EPOCH,
                                         "cancelled.in_flight": False}}

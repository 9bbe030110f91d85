"""/schedules: make, read, change, pause, resume and delete schedules; bad input refused naming its
field with the store unchanged; each due tick fired into one event linked back to its schedule."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from machinery.runtime.scheduler import Scheduler, idempotency_key
from tests.conftest import register_examples

NIGHTLY = {"name": "nightly", "workflow": "process-text", "data": {"message": "good night"},
           "cron": "0 2 * * *", "timezone": "Europe/Paris"}


@pytest.fixture
def examples(client):
    register_examples(client)


@pytest.fixture
def scheduler(app, store):
    return Scheduler(store, app.extensions["machinery"].config)


def make(client, **changes):
    response = client.post("/schedules", json={**NIGHTLY, **changes})
    assert response.status_code == 201, response.get_json()
    return response.get_json()


def due_at(store, name, when):
    """Set a schedule's next tick to `when` (aware), as if time had passed."""
    store.schedules.update_one({"name": name}, {"$set": {"next_run": when.astimezone(UTC).replace(tzinfo=None)}})


def ago(seconds):
    return datetime.now(UTC).replace(microsecond=0) - timedelta(seconds=seconds)


def test_a_schedule_is_made_with_its_next_run_in_its_time_zone(client, examples):
    made = make(client)
    assert made["name"] == "nightly" and made["overlap"] == "skip" and made["catch_up"] == "none"
    assert made["paused"] is False and made["ticks"] == [] and made["every_s"] is None
    next_run = datetime.fromisoformat(made["next_run"])
    assert next_run > datetime.now(UTC) and next_run - datetime.now(UTC) <= timedelta(days=1)
    assert next_run.astimezone(__import__("zoneinfo").ZoneInfo("Europe/Paris")).hour == 2
    assert client.get("/schedules/nightly").get_json()["next_run"] == made["next_run"]
    listed = client.get("/schedules").get_json()
    assert listed["total"] == 1 and [item["name"] for item in listed["items"]] == ["nightly"]


def test_every_s_ticks_on_the_next_whole_period(client, examples):
    made = make(client, cron=None, timezone=None, every_s=60)
    next_run = datetime.fromisoformat(made["next_run"])
    assert next_run.second == 0 and timedelta(0) < next_run - datetime.now(UTC) <= timedelta(seconds=60)


def test_a_second_schedule_of_the_same_name_is_a_conflict(client, examples, store):
    make(client)
    response = client.post("/schedules", json={**NIGHTLY, "cron": "0 3 * * *"})
    assert response.status_code == 409 and "nightly" in response.get_json()["message"]
    assert store.get_schedule("nightly")["cron"] == "0 2 * * *"


BAD = [
    ({"cron": "61 * * * *"}, "cron"),
    ({"cron": "0 2 * *"}, "cron"),
    ({"cron": "0 0 30 2 *"}, "cron"),
    ({"timezone": "Europe/Atlantis"}, "timezone"),
    ({"timezone": "europe/paris "}, "timezone"),
    ({"every_s": 60}, "cron"),  # both
    ({"cron": None}, "cron"),  # neither
    ({"cron": None, "timezone": None, "every_s": 0}, "every_s"),
    ({"cron": None, "timezone": None, "every_s": "60"}, "every_s"),
    ({"workflow": "no-such-workflow"}, "workflow"),
    ({"data": {"message": 42}}, "data"),
    ({"data": {}}, "data"),
    ({"data": "hello"}, "data"),
    ({"catch_up": {"all": 1001}}, "catch_up"),
    ({"catch_up": {"all": 0}}, "catch_up"),
    ({"catch_up": "always"}, "catch_up"),
    ({"overlap": "allow"}, "overlap"),
    ({"name": "bad name!"}, "name"),
    ({"surprise": 1}, "surprise"),
]


@pytest.mark.parametrize("changes, field", BAD)
def test_a_bad_schedule_is_refused_naming_its_field_and_nothing_is_stored(client, examples, store, changes, field):
    response = client.post("/schedules", json={**NIGHTLY, **changes})
    assert response.status_code == 422, response.get_json()
    assert field in response.get_json()["errors"], response.get_json()
    assert store.schedules.count_documents({}) == 0


@pytest.mark.parametrize("changes, field", [(changes, field) for changes, field in BAD
                                            if field not in ("name", "surprise")])
def test_a_bad_change_is_refused_naming_its_field_and_the_schedule_is_unchanged(client, examples, store,
                                                                                 changes, field):
    make(client)
    before = store.schedules.find_one({"name": "nightly"})
    if "every_s" in changes and "cron" not in changes:
        changes = {**changes, "cron": "0 2 * * *"}  # both, as a change
    response = client.patch("/schedules/nightly", json=changes)
    assert response.status_code == 422, response.get_json()
    assert field in response.get_json()["errors"], response.get_json()
    assert store.schedules.find_one({"name": "nightly"}) == before


def test_a_new_timing_moves_the_next_run_and_replaces_the_old_one(client, examples):
    make(client)
    changed = client.patch("/schedules/nightly", json={"every_s": 30})
    assert changed.status_code == 200
    body = changed.get_json()
    assert body["every_s"] == 30 and body["cron"] is None and body["timezone"] is None
    assert datetime.fromisoformat(body["next_run"]) - datetime.now(UTC) <= timedelta(seconds=30)


def test_a_change_of_data_keeps_the_next_run(client, examples):
    made = make(client)
    changed = client.patch("/schedules/nightly", json={"data": {"message": "changed"}}).get_json()
    assert changed["data"] == {"message": "changed"} and changed["next_run"] == made["next_run"]


def test_a_paused_schedule_fires_nothing_and_resumes_from_its_next_tick_after_now(client, examples, store,
                                                                                   scheduler):
    make(client, cron=None, timezone=None, every_s=5)
    paused = client.post("/schedules/nightly/pause")
    assert paused.status_code == 200 and paused.get_json()["paused"] is True
    due_at(store, "nightly", ago(3600))
    assert scheduler.look("test") is False
    resumed = client.post("/schedules/nightly/resume").get_json()
    assert resumed["paused"] is False
    assert datetime.fromisoformat(resumed["next_run"]) > datetime.now(UTC) - timedelta(seconds=1)
    assert store.events.count_documents({}) == 0


def test_unknown_schedules_are_not_found(client):
    for method, path in (("get", "/schedules/nope"), ("patch", "/schedules/nope"), ("delete", "/schedules/nope"),
                         ("post", "/schedules/nope/pause"), ("post", "/schedules/nope/resume")):
        response = getattr(client, method)(path, json={} if method == "patch" else None)
        assert response.status_code == 404, (method, path)


def test_a_deleted_schedule_is_gone_and_fires_no_more(client, examples, store, scheduler):
    make(client, cron=None, timezone=None, every_s=5)
    due_at(store, "nightly", ago(1))
    assert client.delete("/schedules/nightly").status_code == 204
    assert client.get("/schedules/nightly").status_code == 404
    assert scheduler.look("test") is False


# -- firing --------------------------------------------------------------------------------

def test_a_due_tick_becomes_one_event_linked_to_its_schedule(client, examples, store, scheduler):
    make(client)
    tick = ago(2)
    due_at(store, "nightly", tick)
    event_id = scheduler.look("test")
    assert isinstance(event_id, str)
    event = client.get(f"/events/{event_id}").get_json()
    assert event["status"] == "pending" and event["data"] == {"message": "good night"}
    assert event["schedule"] == {"name": "nightly", "tick": tick.isoformat()}
    schedule = client.get("/schedules/nightly").get_json()
    assert schedule["ticks"][-1]["result"] == "fired" and schedule["ticks"][-1]["event_id"] == event_id
    assert schedule["counts"] == {"fired": 1} and schedule["last_event_id"] == event_id
    assert datetime.fromisoformat(schedule["next_run"]) > datetime.now(UTC)
    # Nothing more is due.
    scheduler._next_look = 0.0
    assert scheduler.look("test") is False


def test_a_tick_whose_event_was_stored_before_a_crash_is_not_sent_twice(client, examples, store, scheduler):
    make(client)
    tick = ago(2)
    due_at(store, "nightly", tick)
    # GIVEN a process stored the tick's event, then died before moving the schedule on
    from machinery.events import new_event

    first, _ = new_event(store, "process-text", {"data": {"message": "good night"}},
                         idempotency_key=idempotency_key("nightly", tick))
    # WHEN another fires the tick
    assert scheduler.look("test") is True
    # THEN it finds that event rather than send a second
    assert store.events.count_documents({}) == 1
    assert store.get_schedule("nightly")["ticks"][-1]["event_id"] == first["event_id"]


def test_overlap_skip_records_the_tick_skipped_while_the_event_before_runs(client, examples, store, scheduler):
    make(client, cron=None, timezone=None, every_s=5)
    due_at(store, "nightly", ago(10))
    first = scheduler.look("test")
    due_at(store, "nightly", ago(5))
    scheduler._next_look = 0.0
    assert scheduler.look("test") is True
    schedule = store.get_schedule("nightly")
    assert schedule["ticks"][-1]["result"] == "skipped" and first in schedule["ticks"][-1]["reason"]
    assert store.events.count_documents({}) == 1 and schedule["next_run"] > ago(5)


def test_overlap_queue_holds_the_tick_until_the_event_before_ends(client, examples, store, scheduler):
    make(client, cron=None, timezone=None, every_s=5, overlap="queue")
    due_at(store, "nightly", ago(10))
    first = scheduler.look("test")
    tick = ago(5)
    due_at(store, "nightly", tick)
    scheduler._next_look = 0.0
    assert scheduler.look("test") is True
    held = store.get_schedule("nightly")
    assert held["waiting_for"] == first and held["next_run"] == tick and store.events.count_documents({}) == 1
    # WHEN the event before ends and the hold is over
    store.update_event(first, {"$set": {"status": "completed"}})
    store.schedules.update_one({"name": "nightly"}, {"$set": {"lease_expires": datetime(1970, 1, 1)}})
    scheduler._next_look = 0.0
    second = scheduler.look("test")
    assert isinstance(second, str) and second != first
    assert store.get_event(second)["schedule"]["tick"] == tick


def test_after_downtime_catch_up_one_sends_the_latest_missed_tick_and_records_the_rest(client, examples, store,
                                                                                      scheduler):
    make(client, cron=None, timezone=None, every_s=10, catch_up="one")
    due_at(store, "nightly", ago(3600))
    assert scheduler.look("test") is True  # the catch-up decided
    schedule = store.get_schedule("nightly")
    missed = schedule["ticks"][-1]
    assert missed["result"] == "missed" and missed["count"] >= 350 and schedule["counts"]["missed"] == missed["count"]
    scheduler._next_look = 0.0
    event_id = scheduler.look("test")
    assert isinstance(event_id, str)
    tick = store.get_event(event_id)["schedule"]["tick"]
    assert timedelta(seconds=60) < datetime.now(UTC) - tick <= timedelta(seconds=75)


def test_a_tick_whose_workflow_is_gone_is_recorded_failed_and_the_schedule_goes_on(client, examples, store,
                                                                                   scheduler):
    make(client)
    due_at(store, "nightly", ago(2))
    store.workflows.delete_one({"name": "process-text"})
    store._workflows_read.clear()
    assert scheduler.look("test") is True
    schedule = store.get_schedule("nightly")
    assert schedule["ticks"][-1]["result"] == "failed" and "process-text" in schedule["ticks"][-1]["error"]
    assert schedule["next_run"] > datetime.now(UTC) and store.events.count_documents({}) == 0


# -- the UI ----------------------------------------------------------------------------------

def test_the_schedules_page_lists_each_with_its_timing_next_run_last_result_and_state(client, examples, store,
                                                                                      scheduler):
    make(client)
    make(client, name="often", cron=None, timezone=None, every_s=30)
    client.post("/schedules/often/pause")
    due_at(store, "nightly", ago(2))
    event_id = scheduler.look("test")
    page = client.get("/ui/schedules")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    nightly = html[html.index('id="schedule-nightly"'):]
    nightly = nightly[:nightly.index("</tr>")]
    assert "0 2 * * *" in nightly and "Europe/Paris" in nightly and "process-text" in nightly
    assert "fired" in nightly and event_id in nightly and "active" in nightly
    next_run = store.get_schedule("nightly")["next_run"]
    assert next_run.strftime("%Y-%m-%d %H:%M:%S UTC") in nightly
    often = html[html.index('id="schedule-often"'):]
    often = often[:often.index("</tr>")]
    assert "every 30 s" in often and "paused" in often and "not fired yet" in often
    assert 'href="/ui/schedules"' in client.get("/ui/workflows").get_data(as_text=True)


def test_an_event_a_schedule_sent_links_back_to_it_on_its_page(client, examples, store, scheduler):
    make(client)
    due_at(store, "nightly", ago(2))
    event_id = scheduler.look("test")
    html = client.get(f"/ui/events/{event_id}").get_data(as_text=True)
    assert 'href="/ui/schedules#schedule-nightly"' in html


def test_a_cron_whose_last_year_has_come_fires_its_last_tick_then_pauses(client, examples, store, scheduler):
    make(client, cron="0 0 1 1 * 0 2027")  # seconds, then years: only 1 January 2027 at midnight
    due_at(store, "nightly", ago(2))
    store.schedules.update_one({"name": "nightly"}, {"$set": {"cron": "0 0 1 1 * 0 2026"}})  # ended
    event_id = scheduler.look("test")
    assert isinstance(event_id, str)
    schedule = client.get("/schedules/nightly").get_json()
    assert schedule["paused"] is True and schedule["next_run"] is None and schedule["ticks"][-1]["result"] == "fired"
    refused = client.post("/schedules/nightly/resume")
    assert refused.status_code == 422 and "cron" in refused.get_json()["errors"]
    assert client.get("/ui/schedules").status_code == 200


def test_catch_up_all_with_overlap_queue_sends_the_missed_ticks_in_order_one_after_the_other(client, examples,
                                                                                         store, scheduler):
    make(client, cron=None, timezone=None, every_s=10, catch_up={"all": 3}, overlap="queue")
    due_at(store, "nightly", ago(3600))
    assert scheduler.look("test") is True  # the catch-up decided: the last 3 missed ticks are kept
    sent, holds = [], 0
    for _ in range(12):  # bounded: each round fires a tick or holds it while the event before runs
        scheduler._next_look = 0.0
        found = scheduler.look("test")
        if isinstance(found, str):
            sent.append(found)
            if len(sent) == 4:
                break
            continue
        assert found is True and store.get_schedule("nightly")["waiting_for"] == sent[-1]
        holds += 1
        # the event before ends, and the hold on the next tick is over
        store.update_event(sent[-1], {"$set": {"status": "completed"}})
        store.schedules.update_one({"name": "nightly"}, {"$set": {"lease_expires": datetime(1970, 1, 1)}})
    assert holds == 3
    ticks = [store.get_event(event_id)["schedule"]["tick"] for event_id in sent]
    assert len(ticks) == 4 and ticks == sorted(ticks)
    assert [b - a for a, b in zip(ticks, ticks[1:], strict=False)] == [timedelta(seconds=10)] * 3
    # the three missed ones, then the first on time (no more than 60 s late)
    assert datetime.now(UTC) - ticks[2] > timedelta(seconds=60) >= datetime.now(UTC) - ticks[3]


def test_only_an_admin_key_makes_changes_or_deletes_a_schedule_and_a_read_key_reads_them():
    from tests.security.conftest import ADMIN_KEY, API_KEYS, READ_KEY, SEND_KEY, bearer, make_app

    app = make_app(API_KEYS=API_KEYS)
    try:
        client = app.test_client()
        client.environ_base["HTTP_AUTHORIZATION"] = bearer(ADMIN_KEY)["Authorization"]
        register_examples(client)
        del client.environ_base["HTTP_AUTHORIZATION"]
        for key in (READ_KEY, SEND_KEY):
            refused = client.post("/schedules", json=NIGHTLY, headers=bearer(key))
            assert refused.status_code == 403, key
        assert client.post("/schedules", json=NIGHTLY).status_code == 401
        assert client.post("/schedules", json=NIGHTLY, headers=bearer(ADMIN_KEY)).status_code == 201
        for method, path in (("patch", "/schedules/nightly"), ("delete", "/schedules/nightly"),
                             ("post", "/schedules/nightly/pause"), ("post", "/schedules/nightly/resume")):
            response = getattr(client, method)(path, json={} if method == "patch" else None, headers=bearer(READ_KEY))
            assert response.status_code == 403, (method, path)
        assert client.get("/schedules/nightly", headers=bearer(READ_KEY)).status_code == 200
        assert client.get("/schedules", headers=bearer(SEND_KEY)).status_code == 403
        assert client.get("/ui/schedules", headers=bearer(READ_KEY)).status_code == 200
    finally:
        app.extensions["machinery"].close(grace_s=1)

"""The store's schedules, the same on the embedded store, over the wire and on a real MongoDB: a due
tick claimed by one holder at a time, moved on only by its holder at the tick it claimed, its ticks
kept bounded, and (real MongoDB only) the look for due schedules a walk of its own index."""

from __future__ import annotations

import time
from datetime import timedelta

import pytest

from machinery.exceptions import Conflict
from machinery.store import utcnow
from machinery.store.store import SCHEDULE_TICKS_KEPT, SCHEDULES_DUE, due_schedules
from tests.mongo.conftest import REAL_URI
from tests.mongo.test_workflows_running import plan_nodes


def schedule(name, next_run, paused=False) -> dict:
    return {"name": name, "workflow": "w", "data": {}, "every_s": 60, "cron": None, "timezone": None,
            "overlap": "skip", "catch_up": "none", "paused": paused, "next_run": next_run, "caught_up_to": None}


def test_the_soonest_due_schedule_is_claimed_once_until_its_lease_ends(store):
    now = utcnow()
    store.insert_schedule(schedule("later", now - timedelta(seconds=5)))
    store.insert_schedule(schedule("sooner", now - timedelta(seconds=10)))
    store.insert_schedule(schedule("paused", now - timedelta(seconds=60), paused=True))
    store.insert_schedule(schedule("future", now + timedelta(hours=1)))
    # WHEN two processes look
    first = store.claim_schedule("a", lease_s=0.3)
    second = store.claim_schedule("b", lease_s=0.3)
    third = store.claim_schedule("c", lease_s=0.3)
    # THEN each due one goes to one holder, soonest first; the paused and the future ones to none
    assert (first["name"], second["name"], third) == ("sooner", "later", None)
    time.sleep(0.4)
    assert store.claim_schedule("c", lease_s=30)["name"] == "sooner"  # its holder's lease ended


def test_only_the_holder_moves_a_schedule_on_and_only_from_the_tick_it_claimed(store):
    due = utcnow().replace(microsecond=0) - timedelta(seconds=1)
    store.insert_schedule(schedule("s", due))
    store.claim_schedule("a", lease_s=30)
    tick = {"tick": due, "result": "fired", "event_id": "e1"}
    assert store.advance_schedule("s", "b", due, {"next_run": due + timedelta(seconds=60)}, tick) is False
    assert store.advance_schedule("s", "a", due - timedelta(seconds=60), {"next_run": due}, tick) is False
    assert store.get_schedule("s")["ticks"] == []
    assert store.advance_schedule("s", "a", due, {"next_run": due + timedelta(seconds=60)}, tick) is True
    moved = store.get_schedule("s")
    assert moved["next_run"].replace(tzinfo=None) == due + timedelta(seconds=60)
    assert moved["lease_owner"] is None and moved["counts"] == {"fired": 1}
    assert store.claim_schedule("b", lease_s=30) is None  # not due again before its next tick


def test_a_schedule_keeps_its_last_ticks_and_counts_them_all(store):
    due = utcnow().replace(microsecond=0) - timedelta(hours=1)
    store.insert_schedule(schedule("s", due))
    for n in range(SCHEDULE_TICKS_KEPT + 5):
        tick = due + timedelta(seconds=n)
        assert store.claim_schedule("a", lease_s=30)["name"] == "s"
        assert store.advance_schedule("s", "a", tick, {"next_run": tick + timedelta(seconds=1)},
                                      {"tick": tick, "result": "fired"})
    kept = store.get_schedule("s")
    assert len(kept["ticks"]) == SCHEDULE_TICKS_KEPT and kept["counts"]["fired"] == SCHEDULE_TICKS_KEPT + 5
    assert kept["ticks"][-1]["tick"].replace(tzinfo=None) == due + timedelta(seconds=SCHEDULE_TICKS_KEPT + 4)


def test_a_change_drops_the_lease_and_a_second_schedule_of_a_name_is_a_conflict(store):
    store.insert_schedule(schedule("s", utcnow() - timedelta(seconds=1)))
    store.claim_schedule("a", lease_s=30)
    changed = store.change_schedule("s", {"data": {"x": 1}})
    assert changed["lease_owner"] is None and changed["data"] == {"x": 1}
    with pytest.raises(Conflict):
        store.insert_schedule(schedule("s", utcnow()))
    assert store.schedules.count_documents({}) == 1


def test_the_look_for_due_schedules_walks_its_index(store):
    if not REAL_URI or store.embedded or "gitVersion" not in store.db.client.server_info():
        pytest.skip("query plans are the real MongoDB's: set MACHINERY_TEST_MONGO_URI")
    now = utcnow()
    for n in range(50):
        store.insert_schedule(schedule(f"s{n}", now + timedelta(minutes=n), paused=n % 2 == 0))
    explained = store.schedules.find(due_schedules(now)).sort(SCHEDULES_DUE).limit(1).explain()
    nodes = list(plan_nodes(explained["queryPlanner"]["winningPlan"]))
    assert "COLLSCAN" not in [node["stage"] for node in nodes]
    assert "schedules_due" in {node.get("indexName") for node in nodes if node["stage"] == "IXSCAN"}

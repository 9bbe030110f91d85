"""The store as a deployment sees it, the same on the embedded store, over the wire and on a real MongoDB:
lists that page by cursor and count within a bound, indexes MongoDB would refuse named as refused,
the retention TTL changed in place, the registry lock, and (real MongoDB only) every list query a
covered walk of its own index with no SORT stage."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest
from bson import ObjectId

from machinery.exceptions import InvalidData, StoreRefused, StoreUnavailable
from machinery.store import Store, utcnow
from machinery.store import store as store_module
from tests.mongo.conftest import REAL_URI


def raw_event(when, workflow_id="w1", status="pending") -> dict:
    """A minimal event document: what the list reads (the id, the filter fields and ack_date)."""
    return {"_id": ObjectId(), "workflow_id": workflow_id, "status": status, "ack_date": when,
            "lease_expires": when, "data": {}}


def walk(store, page_size, **filters) -> list[str]:
    """Every event id a cursor walk from the first page reads, in order (bounded: at most 100 pages)."""
    seen, cursor = [], None
    for _ in range(100):
        listed = store.list_events_page(page_size, after=cursor, **filters)
        seen.extend(event["event_id"] for event in listed["items"])
        cursor = listed["next_cursor"]
        if cursor is None:
            return seen
    raise AssertionError("the walk did not end")


def test_a_cursor_walk_reads_every_event_once_in_order_while_new_ones_arrive(store):
    # GIVEN 250 events, seven at a time sharing one millisecond, so that ties straddle pages
    start = utcnow() - timedelta(hours=1)
    stored = [raw_event(start + timedelta(milliseconds=n // 7)) for n in range(250)]
    for event in stored:
        store.insert_event(event)
    expected = [str(event["_id"]) for event in sorted(stored, key=lambda e: (e["ack_date"], e["_id"]), reverse=True)]
    # WHEN the list is walked 40 at a time by next_cursor, and new events arrive between pages
    seen, cursor = [], None
    for _ in range(20):
        listed = store.list_events_page(40, after=cursor, workflow_id="w1")
        seen.extend(event["event_id"] for event in listed["items"])
        store.insert_event(raw_event(utcnow()))
        cursor = listed["next_cursor"]
        if cursor is None:
            break
    # THEN each of the 250 comes exactly once, newest first, and none of those that came later
    assert seen == expected


def test_a_cursor_walk_follows_the_filters(store):
    # GIVEN events of two workflows and two statuses
    now = utcnow()
    stored = [raw_event(now - timedelta(seconds=n), workflow_id=f"w{n % 2}", status=("pending", "failed")[n % 3 == 0])
              for n in range(30)]
    for event in stored:
        store.insert_event(event)
    # WHEN each filter is walked 4 at a time
    # THEN each walk reads exactly the events of its filter, newest first
    for filters in ({}, {"workflow_id": "w1"}, {"status": "failed"}, {"workflow_id": "w0", "status": "pending"}):
        matching = [event for event in stored if all(event[key] == value for key, value in filters.items())]
        assert walk(store, 4, **filters) == [str(event["_id"]) for event in matching], filters


def test_the_first_page_reports_a_cursor_only_when_more_follow(store):
    # GIVEN exactly one page of events
    for n in range(5):
        store.insert_event(raw_event(utcnow() - timedelta(seconds=n)))
    # WHEN the list is read 5 and 4 at a time
    # THEN the full single page says it is the last, the shorter one points on
    assert store.list_events_page(5)["next_cursor"] is None
    assert store.list_events_page(4)["next_cursor"] is not None


def test_filtered_totals_are_counted_up_to_a_bound_and_say_so(store, monkeypatch):
    # GIVEN a counting bound of 5 and 8 pending events
    monkeypatch.setattr(store_module, "COUNT_LIMIT", 5)
    for n in range(8):
        store.insert_event(raw_event(utcnow() - timedelta(seconds=n)))
    # WHEN the pending events and all events are listed
    pending = store.list_events_page(3, status="pending")
    everything = store.list_events_page(3)
    # THEN the filtered total stops at the bound and says it is a lower bound; the unfiltered one is whole
    assert (pending["total"], pending["total_is_lower_bound"]) == (5, True)
    assert (everything["total"], everything["total_is_lower_bound"]) == (8, False)
    assert store.list_events(1, 3, status="pending")[1] == 5


def test_a_page_past_the_offset_cap_is_refused_naming_the_cursor(store):
    # WHEN a page would skip more events than ?page allows
    with pytest.raises(InvalidData) as refused:
        store.list_events_page(100, page=store_module.MAX_PAGE_OFFSET // 100 + 2)
    # THEN it is refused, naming page and pointing at the cursor
    assert "page" in refused.value.errors and "cursor" in refused.value.message


def test_a_cursor_that_was_not_given_is_refused_naming_it(store):
    for token in ("nope", "MTo5OTk6eHl6", "", "x" * 150):
        with pytest.raises(InvalidData) as refused:
            store.list_events_page(10, after=token)
        assert "cursor" in refused.value.errors


def test_an_index_with_the_same_keys_under_another_name_is_refused_and_named(store):
    # GIVEN the claim index's keys already indexed under another name
    store.events.drop_index("status_1_lease_expires_1")
    store.events.create_index([("status", 1), ("lease_expires", 1)], name="made_by_hand")
    # WHEN the indexes are ensured
    with pytest.raises(StoreRefused) as refused:
        store.ensure_indexes()
    # THEN MongoDB's refusal (85) is raised, naming the index and the collection
    assert refused.value.code == 85
    assert "status_1_lease_expires_1" in refused.value.message and "events" in refused.value.message


def test_an_index_of_the_same_name_with_other_keys_is_refused_and_named(store):
    # GIVEN an index named as one of Machinery's, on other keys
    store.events.drop_index("idempotency")
    store.events.create_index([("workflow_id", 1)], name="idempotency")
    # WHEN the indexes are ensured THEN MongoDB's refusal (86) names it
    with pytest.raises(StoreRefused) as refused:
        store.ensure_indexes()
    assert refused.value.code == 86 and "idempotency" in refused.value.message


def test_duplicate_names_under_a_unique_index_are_named(store):
    # GIVEN two services of one name, stored while there was no unique index
    store.services.drop_index("name_1")
    store.services.insert_many([{"name": "twin"}, {"name": "twin"}])
    # WHEN the indexes are ensured THEN the refusal says which collection and field hold duplicates
    with pytest.raises(StoreRefused) as refused:
        store.ensure_indexes()
    assert refused.value.code == 11000
    assert "services" in refused.value.message and "name" in refused.value.message
    assert "duplicates" in refused.value.message


def test_a_ttl_out_of_range_is_refused_as_mongodb_refuses_it(store):
    # WHEN the retention would be more seconds than MongoDB's expireAfterSeconds takes
    with pytest.raises(StoreRefused) as refused:
        store.ensure_indexes(event_ttl_days=(2**31) / 86400 + 1)
    # THEN it is refused (67), naming the option, and no retention index is left
    assert refused.value.code == 67 and "expireAfterSeconds" in refused.value.message
    assert "retention" not in {index["name"] for index in store.events.list_indexes()}


def test_the_retention_changes_in_place_and_a_second_start_changes_nothing(store):
    # GIVEN a retention of 2 days
    store.ensure_indexes(event_ttl_days=2)
    # WHEN it becomes 3, then the same 3 again (another process starting)
    store.ensure_indexes(event_ttl_days=3)
    store.ensure_indexes(event_ttl_days=3)
    # THEN one retention index remains, with the new expiry
    retention = [index for index in store.events.list_indexes() if index["name"] == "retention"]
    assert len(retention) == 1 and retention[0]["expireAfterSeconds"] == 3 * 86400


def test_a_retention_change_over_the_wire_is_a_collmod_not_a_rebuild(wire_server):
    # GIVEN a store on the wire server with a retention of 2 days
    store = Store.connect(wire_server.uri.replace("/machinery", f"/ttl-{uuid.uuid4().hex[:8]}"), 3000)
    store.ensure_indexes(event_ttl_days=2)
    before = list(wire_server.store.collmods)
    # WHEN the retention becomes 5 days
    store.ensure_indexes(event_ttl_days=5)
    # THEN the server got one collMod of each retention index (events and their step records) and the index
    # says 5 days
    assert wire_server.store.collmods[len(before):] == [("events", "retention", 5 * 86400),
                                                        ("step_runs", "retention", 5 * 86400)]
    assert {index["name"]: index for index in store.events.list_indexes()}["retention"]["expireAfterSeconds"] == 432000
    store.db.client.drop_database(store.db.name)
    store.close()


def test_the_registry_lock_is_held_by_one_process_and_a_crashed_ones_lapses(store):
    if store.embedded:
        pytest.skip("the embedded store is one process: its lock is the process's own")
    # GIVEN a second store on the same database (a lock is a document: its owner is each holder's own)
    other = Store(store.db.client[store.db.name])
    # WHEN this one holds the registry
    with store.registry_lock():
        # THEN the other waits and gives up, saying the registry is held
        with pytest.raises(StoreUnavailable) as busy:
            with other.registry_lock(wait_s=0.3):
                pass
        assert "registry" in busy.value.message
    # AND once released, the other takes it at once
    with other.registry_lock(wait_s=0.3):
        pass
    # GIVEN a lock left by a process that crashed while holding it (its expiry passed)
    store.locks.insert_one({"_id": "registry", "owner": "crashed", "expires": utcnow() - timedelta(seconds=1)})
    # THEN it is taken over
    with other.registry_lock(wait_s=0.3):
        assert store.locks.find_one({"_id": "registry"})["owner"] != "crashed"


# -- the real MongoDB's query plans ---------------------------------------------------------------

def plan_nodes(plan):
    """Every stage node of a winning plan, whichever engine made it: the classic tree
    (stage/inputStage/inputStages) or the slot-based one's queryPlan beside its slotBasedPlan."""
    if isinstance(plan, dict):
        if isinstance(plan.get("stage"), str):
            yield plan
        for key, value in plan.items():
            if key != "slotBasedPlan":
                yield from plan_nodes(value)
    elif isinstance(plan, list):
        for item in plan:
            yield from plan_nodes(item)


@pytest.mark.parametrize("filters,index", [
    ({}, "events_newest"),
    ({"workflow_id": "w1"}, "events_by_workflow"),
    ({"status": "pending"}, "events_by_status"),
    ({"workflow_id": "w1", "status": "pending"}, "events_by_workflow_status"),
])
def test_every_list_query_is_a_covered_walk_of_its_index_with_no_sort(store, filters, index):
    if not REAL_URI or store.embedded or "gitVersion" not in store.db.client.server_info():
        pytest.skip("query plans are the real MongoDB's: set MACHINERY_TEST_MONGO_URI")
    # GIVEN events enough for the planner to choose, in two workflows and statuses
    now = utcnow()
    store.events.insert_many([raw_event(now - timedelta(milliseconds=n // 3), workflow_id=f"w{n % 2}",
                                        status=("pending", "completed")[n % 2]) for n in range(600)])
    cursor = store.list_events_page(20, **filters)["next_cursor"]
    assert cursor is not None
    # WHEN each find a page reads (the first page, and both ranges after a cursor) is explained
    for find in [*store._event_walks(filters, None), *store._event_walks(filters, cursor)]:
        explained = find.limit(21).explain()
        winning = explained["queryPlanner"]["winningPlan"]
        nodes = list(plan_nodes(winning))
        stages = [node["stage"] for node in nodes]
        # THEN the winning plan walks the filter's own index, reads nothing else, and sorts nothing
        assert "SORT" not in stages and "COLLSCAN" not in stages, winning
        assert "FETCH" not in stages, winning  # covered: ids and dates come from the index
        assert index in {node.get("indexName") for node in nodes if node["stage"] == "IXSCAN"}, winning

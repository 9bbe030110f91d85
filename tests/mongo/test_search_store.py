"""Search attributes and bulk jobs as a deployment sees them, the same on the embedded store, over the wire
and on a real MongoDB: attribute filters page and count, jobs are claimed once and their pages recorded once,
and (real MongoDB only) an attribute search walks events_by_attr."""

from __future__ import annotations

from datetime import timedelta

import pytest
from bson import ObjectId

from machinery.store import utcnow
from tests.mongo.conftest import REAL_URI
from tests.mongo.test_store_ops import plan_nodes, walk


def attr_event(when, customer: str, total: int, workflow_id="w1") -> dict:
    return {"_id": ObjectId(), "workflow_id": workflow_id, "status": "failed", "ack_date": when,
            "lease_expires": when, "data": {},
            "attrs": [{"k": "customer_id", "v": customer}, {"k": "order.total", "v": total}]}


def stored_events(store, count=60) -> list[dict]:
    now = utcnow()
    events = [attr_event(now - timedelta(milliseconds=n // 2), f"c{n % 3}", n, f"w{n % 2}") for n in range(count)]
    for event in events:
        store.insert_event(event)
    return sorted(events, key=lambda e: (e["ack_date"], e["_id"]), reverse=True)


@pytest.mark.parametrize("attrs, keep", [
    ([("customer_id", "eq", "c1")], lambda e: e["attrs"][0]["v"] == "c1"),
    ([("order.total", "gte", 40)], lambda e: e["attrs"][1]["v"] >= 40),
    ([("customer_id", "ne", "c1"), ("order.total", "lt", 30)],
     lambda e: e["attrs"][0]["v"] != "c1" and e["attrs"][1]["v"] < 30),
])
def test_an_attribute_search_walks_and_counts_exactly_its_events(store, attrs, keep):
    events = stored_events(store)
    expected = [str(event["_id"]) for event in events if keep(event)]
    assert walk(store, 7, attrs=attrs) == expected
    assert store.list_events_page(7, attrs=attrs)["total"] == len(expected)
    in_w1 = [str(event["_id"]) for event in events if keep(event) and event["workflow_id"] == "w1"]
    assert walk(store, 5, attrs=attrs, workflow_id="w1") == in_w1


def test_a_bulk_job_is_claimed_by_one_holder_and_each_page_recorded_once(store):
    now = utcnow()
    job = store.bulk_jobs.insert({"action": "retry", "status": "pending", "lease_expires": now - timedelta(seconds=1),
                                  "cursor": None, "created_at": now, "done": 0})
    assert store.bulk_jobs.claim("a", 30.0, now)["lease_owner"] == "a"
    assert store.bulk_jobs.claim("b", 30.0, now) is None  # held
    assert store.bulk_jobs.record_page(job["job_id"], "a", None, {"$set": {"cursor": "x"}, "$inc": {"done": 3}})
    assert not store.bulk_jobs.record_page(job["job_id"], "a", None, {"$inc": {"done": 3}})  # the page moved on
    assert not store.bulk_jobs.record_page(job["job_id"], "b", "x", {"$inc": {"done": 3}})  # not b's
    taken = store.bulk_jobs.claim("b", 30.0, now + timedelta(seconds=31))  # a's lease expired
    assert (taken["lease_owner"], taken["done"], taken["cursor"], taken["claims"]) == ("b", 3, "x", 2)


@pytest.mark.parametrize("attrs, sorted_by_index", [
    ([("customer_id", "eq", "c1")], True),
    ([("order.total", "gte", 40)], False),
])
def test_an_attribute_search_walks_events_by_attr(store, attrs, sorted_by_index):
    if not REAL_URI or store.embedded or "gitVersion" not in store.db.client.server_info():
        pytest.skip("query plans are the real MongoDB's: set MACHINERY_TEST_MONGO_URI")
    now = utcnow()
    store.events.insert_many([attr_event(now - timedelta(milliseconds=n), f"c{n % 50}", n % 100) for n in range(2000)])
    from machinery.store.event_filters import attr_query

    for find in store._event_walks(attr_query(attrs), None):
        winning = find.limit(21).explain()["queryPlanner"]["winningPlan"]
        nodes = list(plan_nodes(winning))
        stages = [node["stage"] for node in nodes]
        assert "COLLSCAN" not in stages, winning
        assert "events_by_attr" in {node.get("indexName") for node in nodes if node["stage"] == "IXSCAN"}, winning
        if sorted_by_index:  # an equality is walked in the list's order: nothing is sorted
            assert "SORT" not in stages, winning

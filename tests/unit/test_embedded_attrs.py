"""The embedded store's search-attribute indexes: their answers are stock mongomock's, with no scan."""

from __future__ import annotations

from datetime import datetime, timedelta

import mongomock
from bson import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from machinery.store import Store
from machinery.store.event_filters import attr_query
from tests.unit.test_embedded import scans  # noqa: F401 - the fixture

NEWEST_FIRST = [("ack_date", -1), ("_id", -1)]
BASE = datetime(2030, 1, 1)
IDS = [ObjectId(f"{number:024x}") for number in range(12)]
VALUES = ["c1", "c2", "10", 5, 5.0, 7, -1, 2.5, True, False]
values = st.sampled_from(VALUES)
attrs = st.one_of(
    st.lists(st.tuples(st.sampled_from(["customer_id", "total"]), values), max_size=2, unique_by=lambda p: p[0])
    .map(lambda pairs: [{"k": k, "v": v} for k, v in pairs]),
    st.sampled_from([None, "odd", [{"k": "total"}], [{"k": "total", "v": [1]}]]),  # shapes left to mongomock
)
documents = st.fixed_dictionaries({
    "_id": st.sampled_from(IDS),
    "workflow_id": st.sampled_from(["w1", "w2"]),
    "status": st.sampled_from(["failed", "completed"]),
    "ack_date": st.sampled_from([BASE, BASE + timedelta(seconds=1), BASE + timedelta(seconds=2)]),
    "attrs": attrs,
    "error": st.sampled_from([None, {"kind": "timeout", "step": 0}, {"kind": "contract", "step": "s1"}]),
}).map(lambda document: {key: value for key, value in document.items() if value is not None})
operators = st.sampled_from(["eq", "gt", "gte", "lt", "lte", "ne"])
filters = st.lists(st.tuples(st.sampled_from(["customer_id", "total", "other"]), operators, values),
                   min_size=0, max_size=3)
others = st.lists(st.sampled_from([{"error.kind": "timeout"}, {"error.step": {"$in": ["s1", 1]}},
                                   {"ack_date": {"$gte": BASE + timedelta(seconds=1)}},
                                   {"ack_date": {"$gte": BASE, "$lt": BASE + timedelta(seconds=2)}}]), max_size=2)
scopes = st.fixed_dictionaries({}, optional={"workflow_id": st.sampled_from(["w1", "w2"]),
                                             "status": st.sampled_from(["failed", "completed"])})
positions = st.one_of(st.none(), st.tuples(st.sampled_from([BASE, BASE + timedelta(seconds=1)]),
                                           st.sampled_from(IDS)))


def both_stores():
    stock = Store(mongomock.MongoClient().db)
    embedded = Store(mongomock.MongoClient().db, embedded=True)
    for store in (stock, embedded):
        store.ensure_indexes()
    return stock.events, embedded.events


def answers(events, query, position):
    if position is not None:
        when, oid = position
        query = {**query, "ack_date": when, "_id": {"$lt": oid}} if oid.binary[-1] % 2 else \
            {**query, "ack_date": {"$lt": when}}
    return (events.count_documents(query), events.count_documents(query, limit=2),
            [document["_id"] for document in events.find(query, {"_id": 1}).sort(NEWEST_FIRST).skip(1).limit(3)],
            [document["_id"] for document in events.find(query, {"_id": 1}).sort(NEWEST_FIRST).limit(20)])


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(documents, max_size=12, unique_by=lambda document: document["_id"]),
       st.lists(st.tuples(st.sampled_from(IDS), attrs), max_size=4), filters, others, scopes, positions)
def test_attribute_queries_answer_as_stock_mongomock(inserted, changes, wanted, extra, scope, position):
    stock, embedded = both_stores()
    for events in (stock, embedded):
        for document in inserted:
            events.insert_one(dict(document))
        for oid, value in changes:  # a write that changes the attributes moves the event in the indexes
            change = {"$set": {"attrs": value}} if value is not None else {"$unset": {"attrs": ""}}
            events.update_one({"_id": oid}, change)
    query = {**scope, **attr_query(wanted)}
    if extra:
        query["$and"] = query.get("$and", []) + extra
    assert answers(embedded, query, position) == answers(stock, query, position)


def test_searches_read_the_attribute_indexes_without_a_scan(scans):  # noqa: F811 - the fixture
    # GIVEN 3,000 events with a customer and a total each
    store = Store.connect("mongomock://localhost/attrs")
    store.ensure_indexes()
    inserted = []
    for number in range(3000):
        inserted.append(store.insert_event({
            "workflow_id": f"w{number % 2}", "status": "failed" if number % 5 == 0 else "completed",
            "ack_date": BASE + timedelta(seconds=number), "lease_expires": BASE,
            "attrs": [{"k": "customer_id", "v": f"c{number % 30}"}, {"k": "total", "v": number}]})[0]["event_id"])
    scans.clear()
    # WHEN searched by equality, range, both, with a workflow, with a status, and paged on by cursor
    first = store.list_events_page(10, attrs=[("customer_id", "eq", "c7")])
    second = store.list_events_page(10, after=first["next_cursor"], attrs=[("customer_id", "eq", "c7")])
    ranged = store.list_events_page(5, attrs=[("total", "gte", 2990)])
    narrow = store.list_events_page(5, attrs=[("total", "lt", 100), ("customer_id", "eq", "c7")],
                                    workflow_id="w1", status="completed")
    not_c7 = store.list_events_page(5, attrs=[("customer_id", "ne", "c7")])
    # THEN each is the right answer
    c7 = [inserted[n] for n in range(2999, -1, -1) if n % 30 == 7]
    assert first["total"] == 100 and [e["event_id"] for e in first["items"] + second["items"]] == c7[:20]
    assert ranged["total"] == 10 and [e["event_id"] for e in ranged["items"]] == inserted[:-6:-1]
    assert narrow["total"] == 4 and [e["event_id"] for e in narrow["items"]] == [inserted[n] for n in (97, 67, 37, 7)]
    assert not_c7["total"] == 2900 and [e["event_id"] for e in not_c7["items"]] == inserted[:-6:-1]
    # AND a bulk action's filter (dates, error kind, step, with or without attributes) is read the same way
    from machinery.runtime import bulk
    from machinery.store.event_filters import event_query

    failed_c7 = event_query(status="failed", attrs=[("customer_id", "eq", "c7")], error_kind="timeout",
                            created_after=BASE + timedelta(seconds=100), created_before=BASE + timedelta(seconds=2000))
    assert store.bulk_jobs.count_events(failed_c7, 10_000) == 0
    dated = event_query(workflow_id="w1", created_after=BASE + timedelta(seconds=2990))
    ids, position = store.bulk_jobs.event_page(dated, None, 3)
    assert ids == [inserted[n] for n in (2999, 2997, 2995)] and position is not None
    assert store.bulk_jobs.event_page(dated, position, 10)[0] == [inserted[n] for n in (2993, 2991)]
    counted = bulk.dry_run(store, {"action": "replay", "filter": {"attrs": [["total", "gte", 2990]]}})
    assert (counted["matched"], counted["applicable"]) == (10, 10)
    # AND no whole-collection scan was made
    assert scans == []

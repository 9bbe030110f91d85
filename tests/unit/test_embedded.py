"""The embedded events collection: its indexed answers are stock mongomock's, and it does not scan."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import mongomock
import pytest
from bson import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mongomock.collection import Collection
from mongomock.store import CollectionStore
from pymongo import ReturnDocument

from machinery.store import ACTIVE, EPOCH, Store
from machinery.store.embedded import embedded_events

NEWEST_FIRST = [("ack_date", -1), ("_id", -1)]
IDS = [ObjectId(f"{number:024x}") for number in range(10)]
BASE = datetime(2030, 1, 1)
DATES = [EPOCH, BASE, BASE + timedelta(microseconds=1500), BASE + timedelta(milliseconds=1),
         BASE + timedelta(seconds=1), datetime(2030, 1, 1, 1, tzinfo=timezone(timedelta(hours=1)))]
NOWS = [BASE, BASE + timedelta(milliseconds=1, microseconds=700), BASE + timedelta(days=1)]
STATUSES = ["pending", "running", "waiting", "completed", "failed"]
WORKFLOWS = ["w1", "w2"]
TOKENS = ["h1", "h2"]
ABSENT = object()  # a field left out of the document


def oddly(*values):
    """Values the indexes do not order or bucket, so that queries must fall back: drawn rarely."""
    return st.sampled_from(values)


def field(regular, *odd):
    return st.one_of(st.sampled_from(regular), oddly(*odd)) if odd else st.sampled_from(regular)


dates = field(DATES + [None, ABSENT], 5, "soon", [BASE], [])
documents = st.fixed_dictionaries({
    "_id": st.sampled_from(IDS),
    "status": field(STATUSES, ["pending"], 3, None, ABSENT),
    # Not a list: mongomock's unique check of a list against a string is one-sided, so it would let in
    # a pair of documents that its next check of the other one refuses, and which MongoDB never holds.
    "workflow_id": field(WORKFLOWS, ABSENT, None),
    "ack_date": dates,
    "lease_expires": dates,
    "lease_owner": st.sampled_from(["a", "b", None]),
    "webhook": st.one_of(st.none(), st.just(ABSENT), st.fixed_dictionaries(
        {"status": field(["pending", "sent"], 1), "next_at": dates}), oddly([{"status": "pending"}])),
    "waiting": st.one_of(st.none(), st.just(ABSENT), st.fixed_dictionaries({"token_hash": field(TOKENS, 5)})),
    "spent_tokens": field([ABSENT, [], ["h1"], ["h1", "h2"]], "h2", [5]),
    "idempotency_key": st.sampled_from([ABSENT, ABSENT, "k1", "k2"]),
}).map(lambda document: {key: value for key, value in document.items() if value is not ABSENT})

settable = st.one_of(
    st.tuples(st.just("status"), field(STATUSES, ["waiting"])),
    st.tuples(st.just("workflow_id"), st.sampled_from(WORKFLOWS)),
    st.tuples(st.sampled_from(["ack_date", "lease_expires", "webhook.next_at"]), dates),
    st.tuples(st.just("webhook"), st.sampled_from([None, {"status": "pending", "next_at": BASE}])),
    st.tuples(st.just("waiting"), st.sampled_from([{"token_hash": "h2"}, None])),
    st.tuples(st.just("lease_owner"), st.sampled_from(["a", "b"])),
)
updates = st.one_of(
    settable.map(lambda pair: {"$set": {pair[0]: pair[1]}}),
    st.just({"$unset": {"waiting": ""}}),
    st.just({"$push": {"spent_tokens": "h3"}}),
    st.just({"$set": {"status": "running", "lease_owner": "a"}, "$push": {"claims": {"owner": "a"}}}),
)
statuses_asked = st.lists(st.sampled_from(STATUSES), min_size=1, max_size=3)
operations = st.one_of(
    st.tuples(st.just("insert"), documents),
    st.tuples(st.just("update_by_id"), st.sampled_from(IDS), updates),
    st.tuples(st.just("update_held"), st.sampled_from(IDS), st.sampled_from(["a", "b"]), updates),
    st.tuples(st.just("claim"), st.sampled_from(NOWS), statuses_asked, st.sampled_from([None, *IDS[:3]])),
    st.tuples(st.just("claim_webhook"), st.sampled_from(NOWS)),
    st.tuples(st.just("renew"), st.lists(st.sampled_from(IDS), max_size=4), st.sampled_from(["a", "b"])),
    st.tuples(st.just("update_by_workflow"), st.sampled_from(WORKFLOWS), updates),
    st.tuples(st.just("update_many_by_status"), st.sampled_from(STATUSES), updates),
    st.tuples(st.just("replace"), documents),
    st.tuples(st.just("delete_one"), st.sampled_from(IDS)),
    st.tuples(st.just("delete_many"), st.sampled_from(STATUSES)),
)


def apply(events, operation):
    """One write, as the Store makes it (or close to it); what it answered, or the error it raised."""
    kind, *args = operation
    try:
        if kind == "insert":
            return events.insert_one(dict(args[0])).inserted_id
        # An update of one event by `_id` counts as modified whenever it matched (see embedded.py).
        if kind == "update_by_id":
            return events.update_one({"_id": args[0]}, args[1]).matched_count
        if kind == "update_held":
            return events.update_one({"_id": args[0], "lease_owner": args[1]}, args[2]).matched_count
        if kind == "claim":
            now, statuses, only = args
            query = {"status": {"$in": statuses}, "lease_expires": {"$lte": now}}
            if only is not None:
                query["_id"] = only
            return events.find_one_and_update(
                query, {"$set": {"status": "running", "lease_owner": "c", "lease_expires": now + timedelta(seconds=1)},
                        "$push": {"claims": {"owner": "c", "at": now}}},
                sort=[("lease_expires", 1)], return_document=ReturnDocument.AFTER)
        if kind == "claim_webhook":
            return events.find_one_and_update(
                {"webhook.status": "pending", "webhook.next_at": {"$lte": args[0]}},
                {"$set": {"webhook.owner": "c", "webhook.next_at": args[0] + timedelta(seconds=1)}},
                sort=[("webhook.next_at", 1)], return_document=ReturnDocument.AFTER)
        if kind == "renew":
            return events.update_many({"_id": {"$in": args[0]}, "lease_owner": args[1]},
                                      {"$set": {"lease_expires": BASE + timedelta(hours=1)}}).modified_count
        if kind == "update_by_workflow":
            return counts(events.update_one({"workflow_id": args[0]}, args[1]))
        if kind == "update_many_by_status":
            return counts(events.update_many({"status": args[0]}, args[1]))
        if kind == "replace":
            replacement = {key: value for key, value in args[0].items() if key != "_id"}
            return counts(events.replace_one({"_id": args[0]["_id"]}, replacement))
        if kind == "delete_one":
            return events.delete_one({"_id": args[0]}).deleted_count
        return events.delete_many({"status": args[0]}).deleted_count
    except Exception as error:  # noqa: BLE001 - both collections must fail alike
        return type(error).__name__


def counts(result) -> tuple[int, int]:
    return result.matched_count, result.modified_count


def ids(cursor) -> list:
    return [document["_id"] for document in cursor]


def light_view(events) -> dict:
    """What the Store reads most, checked after every write."""
    return {
        "all": list(events.find({})),
        "count": events.count_documents({}),
        "newest": ids(events.find({}, {"_id": 1}).sort(NEWEST_FIRST).limit(3)),
        "claimable": ids(events.find({"status": {"$in": list(ACTIVE)}, "lease_expires": {"$lte": NOWS[1]}})
                         .sort([("lease_expires", 1)]).limit(2)),
    }


def full_view(events) -> dict:
    """Every query shape the indexes answer, in the ways the Store asks them and a few more."""
    view = light_view(events)
    for workflow in [None, *WORKFLOWS, "w3"]:
        for status in [None, *STATUSES]:
            query = {key: value for key, value in (("workflow_id", workflow), ("status", status)) if value}
            view["count", workflow, status] = events.count_documents(query)
            for skip, limit in ((0, 20), (0, 1), (1, 2), (3, 4), (20, 20)):
                cursor = events.find(query, {"_id": 1}).sort(NEWEST_FIRST).skip(skip).limit(limit)
                view["page", workflow, status, skip, limit] = ids(cursor)
    for now in NOWS:
        for statuses in (list(ACTIVE), ["pending"], ["waiting", "waiting"], ["completed", "pending"]):
            query = {"status": {"$in": statuses}, "lease_expires": {"$lte": now}}
            view["due", now, tuple(statuses)] = ids(events.find(query).sort([("lease_expires", 1)]).limit(3))
            view["first due", now, tuple(statuses)] = events.find_one(query, sort=[("lease_expires", 1)])
        query = {"webhook.status": "pending", "webhook.next_at": {"$lte": now}}
        view["webhook", now] = ids(events.find(query).sort([("webhook.next_at", 1)]).limit(2))
    for token in [*TOKENS, "h3"]:
        view["waiting on", token] = events.find_one({"waiting.token_hash": token})
        view["spent", token] = events.find_one({"spent_tokens": token}, {"_id": 1})
    for workflow in WORKFLOWS:
        for key in ("k1", "k2"):
            view["idempotent", workflow, key] = events.find_one({"workflow_id": workflow, "idempotency_key": key})
    for status in STATUSES:
        view["by status", status] = ids(events.find({"status": status}))
    return view


def stock_and_embedded():
    """The Store's events collection twice, with the Store's indexes: stock mongomock and embedded."""
    stock = Store(mongomock.MongoClient().db)
    embedded = Store(mongomock.MongoClient().db, embedded=True)
    for store in (stock, embedded):
        store.ensure_indexes()
    assert type(stock.events) is Collection and type(embedded.events) is not Collection
    return stock.events, embedded.events


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operations, max_size=30))
def test_the_embedded_collection_answers_as_stock_mongomock(writes):
    stock, embedded = stock_and_embedded()
    for operation in writes:
        assert apply(embedded, operation) == apply(stock, operation), operation
        assert light_view(embedded) == light_view(stock), operation
    assert full_view(embedded) == full_view(stock)


def test_events_expire_as_stock_mongomock_expires_them_without_a_scan(monkeypatch):
    # GIVEN a clock, a retention index of a minute, and events finished at various times (or oddly)
    clock = [BASE]
    monkeypatch.setattr(mongomock, "utcnow", lambda: clock[0])
    scans = []
    expire = CollectionStore._expire_documents
    monkeypatch.setattr(CollectionStore, "_expire_documents",
                        lambda store, index: scans.append(type(store)) or expire(store, index))
    stock, embedded = stock_and_embedded()
    finished_dates = [BASE - timedelta(minutes=minutes) for minutes in (0, 1, 2, 5)] + [
        None, [BASE - timedelta(minutes=1), BASE], 5, [], BASE + timedelta(seconds=1, microseconds=1500)]
    for events in (stock, embedded):
        events.create_index("finished_at", name="retention", expireAfterSeconds=60)
        for number, finished in enumerate(finished_dates):
            events.insert_one({"_id": IDS[number], "status": "completed" if finished else "pending",
                               "workflow_id": "w1", "ack_date": BASE, "lease_expires": EPOCH, "finished_at": finished})
    # WHEN time passes THEN the same events are left, and the embedded collection never scanned for them
    for later in (timedelta(0), timedelta(seconds=59, microseconds=999999), timedelta(minutes=1),
                  timedelta(minutes=2, seconds=1), timedelta(hours=1)):
        clock[0] = BASE + later
        assert full_view(embedded) == full_view(stock), later
    assert embedded.count_documents({}) == 3 and scans and type(embedded._store) not in scans


def test_a_dropped_collection_leaves_no_index_entries():
    _, embedded = stock_and_embedded()
    embedded.insert_one({"_id": IDS[0], "status": "pending", "workflow_id": "w1", "ack_date": BASE})
    embedded.drop()
    assert embedded.count_documents({"status": "pending"}) == 0
    assert ids(embedded.find({}).sort(NEWEST_FIRST).limit(5)) == []
    embedded.insert_one({"_id": IDS[0], "status": "running", "workflow_id": "w1", "ack_date": BASE})
    assert ids(embedded.find({"status": "running"}).sort(NEWEST_FIRST).limit(5)) == [IDS[0]]


def test_collections_with_other_internals_are_left_as_they_are():
    class Custom(Collection):
        pass

    database = mongomock.MongoClient().db
    custom = Custom(database, "events", database._store)
    assert embedded_events(custom) is custom and type(custom) is Custom


@pytest.fixture
def scans(monkeypatch):
    """The whole-collection scans mongomock made: the filters its _iter_documents was asked, and
    "expiry" for each look through every document for expired ones."""
    calls = []
    scan, expire = Collection._iter_documents, CollectionStore._expire_documents

    def counted_scan(self, filter):
        calls.append(filter)
        return scan(self, filter)

    def counted_expiry(self, index):
        calls.append("expiry")
        return expire(self, index)

    monkeypatch.setattr(Collection, "_iter_documents", counted_scan)
    monkeypatch.setattr(CollectionStore, "_expire_documents", counted_expiry)
    return calls


def filled_store(events: int) -> tuple[Store, list[str]]:
    """An embedded store with retention and `events` events over two workflows: most completed, a
    few of each other kind (waiting on a callback, with a due webhook, with an idempotency key)."""
    store = Store.connect("mongomock://localhost/scans")
    store.ensure_indexes(event_ttl_days=30)
    base = datetime(2030, 1, 1)
    inserted = []
    for number in range(events):
        event = {"workflow_id": f"w{number % 2}", "status": "completed", "ack_date": base + timedelta(seconds=number),
                 "lease_owner": None, "lease_expires": EPOCH, "finished_at": base, "steps": [], "context": {}}
        if number % 1000 == 1:
            event.update(status="waiting", waiting={"token_hash": f"t{number}"}, lease_expires=datetime(2020, 1, 1))
        if number % 1000 == 2:
            event.update(webhook={"status": "pending", "attempts": [], "next_at": EPOCH}, spent_tokens=[f"s{number}"])
        if number % 1000 == 3:
            event.update(idempotency_key=f"k{number}")
        inserted.append(store.insert_event(event)[0]["event_id"])
    return store, inserted


def test_the_store_reads_events_without_scanning_them(scans):
    # GIVEN 3,000 stored events, and a retention index (mongomock looks for expired events at every access)
    store, inserted = filled_store(3000)
    scans.clear()
    # WHEN the Store asks every question it asks of the events collection
    page, total = store.list_events(2, 20)
    assert total == 3000 and [event["event_id"] for event in page] == inserted[::-1][20:40]
    page, total = store.list_events(1, 5, workflow_id="w1", status="waiting")
    assert total == 3 and [event["status"] for event in page] == ["waiting"] * 3
    assert store.count_events("completed") == 2997
    assert store.pending_events_by_status() == {"pending": 0, "running": 0, "waiting": 3}
    assert store.get_event(inserted[7])["event_id"] == inserted[7]
    assert store.find_by_callback("t1001")[0]["event_id"] == inserted[1001]
    assert store.find_by_callback("s2002") == (None, True)
    assert store.find_by_callback("unknown") == (None, False)
    first, created = store.insert_event({"workflow_id": "w1", "status": "pending", "idempotency_key": "k3",
                                         "ack_date": datetime(2031, 1, 1), "lease_expires": EPOCH})
    assert (first["event_id"], created) == (inserted[3], False)
    assert store.claim_event("worker", 30.0)["event_id"] == inserted[1]
    assert store.renew_leases("worker", [inserted[1]], 60.0) == 1
    assert store.claim_webhook("worker", 30.0)["event_id"] == inserted[2]
    assert store.update_event(inserted[1], {"$set": {"status": "completed"}}, owner="worker")
    # THEN no whole-collection scan was made
    assert scans == []
    # AND a question the indexes do not answer does scan (the spy sees scans)
    store.events.find_one({"context.missing": 1})
    assert scans == [{"context.missing": 1}]


_DOCUMENTS = [{}, {"a": None}, {"a": "x"}, {"a": ["x", "y"]}, {"a": {"b": "x"}}, {"a": {"b": None}},
              {"a": [{"b": "x"}]}, {"a": 1}, {"a": "y", "c": "x"}, {"waiting": None}, {"waiting": {"token_hash": "t"}}]
_PARTIALS = [{"a": {"$exists": True}}, {"a.b": {"$exists": True}}, {"waiting.token_hash": {"$exists": True}},
             {"a": "x"}, {"a": {"$exists": False}}]


@pytest.mark.parametrize("document", _DOCUMENTS)
@pytest.mark.parametrize("partial", _PARTIALS)
def test_a_partial_index_is_read_as_mongomock_reads_it(partial, document):
    from mongomock.filtering import filter_applies

    from machinery.store.embedded import partial_applies

    assert partial_applies(partial, document, filter_applies) == filter_applies(partial, document)


@pytest.mark.parametrize("document", _DOCUMENTS)
@pytest.mark.parametrize("extra", [{"a": "x"}, {"a": "y"}, {"a": "x", "c": "x"}, {"a.b": "x"}, {"a": None},
                                   {"a": {"$in": ["x"]}}, {"c": "x"}])
def test_a_holder_s_write_matches_as_mongomock_matches_it(extra, document):
    from mongomock.filtering import filter_applies

    from machinery.store.embedded import _string_equalities_hold

    oid = ObjectId()
    filter = {"_id": oid, **extra}
    assert _string_equalities_hold(filter, {"_id": oid, **document}, filter_applies) == \
        filter_applies(filter, {"_id": oid, **document})

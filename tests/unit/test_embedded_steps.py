"""The embedded step_runs collection: its answers are stock mongomock's, and it does not scan."""

from __future__ import annotations

from datetime import datetime, timedelta

import mongomock
import pytest
from bson import ObjectId
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mongomock.collection import Collection
from mongomock.store import CollectionStore

from machinery.store import Store
from machinery.store.embedded_steps import embedded_step_runs

IDS = [ObjectId(f"{number:024x}") for number in range(8)]
BASE = datetime(2030, 1, 1)
EVENTS = ["e1", "e2"]
INSTANCES = ["a", "m[0].b", "m[1].b"]
ABSENT = object()


def field(regular, *odd):
    """A field's values: mostly regular ones; rarely ones the lookups do not answer for."""
    return st.one_of(st.sampled_from(regular), st.sampled_from(odd)) if odd else st.sampled_from(regular)


records = st.fixed_dictionaries({
    "_id": st.one_of(st.sampled_from(IDS), st.just(ABSENT)),
    # Not a list: mongomock's unique check of a list against a string is one-sided (see test_embedded).
    "event_id": field(EVENTS, None, ABSENT, 5),
    "run": field([0, 1], 1.0, True, "0"),
    "instance": field(INSTANCES, None, 3),
    "node": st.sampled_from(["a", "b"]),
    "item": st.sampled_from([None, 0, 1]),
    "status": st.sampled_from(["running", "completed", "failed", "waiting"]),
    "started_at": st.sampled_from([BASE, BASE + timedelta(seconds=1)]),
    "token_hash": field([ABSENT, ABSENT, "t1", "t2"], None, ["t1"]),
}).map(lambda record: {key: value for key, value in record.items() if value is not ABSENT})

updates = st.one_of(
    st.sampled_from([{"$set": {"status": "completed", "outputs": {"x": 1}}}, {"$set": {"token_hash": "t2"}},
                     {"$unset": {"token_hash": ""}}, {"$set": {"instance": "a"}}, {"$set": {"run": 2}},
                     {"$set": {"event_id": "e2"}}, {"$push": {"attempts": {"n": 1}}}]))
keys = st.tuples(st.sampled_from(EVENTS), st.sampled_from([0, 1]), st.sampled_from(INSTANCES))
operations = st.one_of(
    st.tuples(st.just("insert"), records),
    st.tuples(st.just("update_key"), keys, st.sampled_from([None, {"status": "running"}]), updates),
    st.tuples(st.just("update_token"), st.sampled_from(["t1", "t2"]), updates),
    st.tuples(st.just("update_many_event"), st.sampled_from(EVENTS), updates),
    st.tuples(st.just("delete_event"), st.sampled_from(EVENTS)),
)


def apply(collection, operation):
    """One write as the Store makes it; what it answered, or the error it raised."""
    kind, *args = operation
    try:
        if kind == "insert":
            return collection.insert_one(dict(args[0])).acknowledged
        if kind == "update_key":
            (event, run, instance), expect, update = args
            query = {"event_id": event, "run": run, "instance": instance, **(expect or {})}
            return collection.update_one(query, update).matched_count
        if kind == "update_token":
            return collection.update_one({"token_hash": args[0]}, args[1]).matched_count
        if kind == "update_many_event":
            return collection.update_many({"event_id": args[0]}, args[1]).matched_count
        return collection.delete_many({"event_id": args[0]}).deleted_count
    except Exception as error:  # noqa: BLE001 - both collections must fail alike
        return type(error).__name__


def without_ids(documents) -> list:
    return [{key: value for key, value in document.items() if key != "_id"} for document in documents]


def view(collection) -> dict:
    """Every question the Store asks of step records, and a few more."""
    answers = {"all": without_ids(collection.find({}))}
    for event in [*EVENTS, "e3"]:
        answers["of", event] = without_ids(collection.find({"event_id": event}).sort([("run", 1), ("started_at", 1)]))
        answers["top", event] = without_ids(collection.find({"event_id": event, "item": None, "run": {"$in": [0, 1]}}))
        answers["count", event] = collection.count_documents({"event_id": event, "node": "b"})
        answers["page", event] = without_ids(collection.find({"event_id": event}).sort(
            [("run", 1), ("started_at", 1), ("instance", 1)]).skip(1).limit(2))
        for run in (0, 1):
            for instance in INSTANCES:
                answers["key", event, run, instance] = collection.find_one(
                    {"event_id": event, "run": run, "instance": instance}, {"_id": 0})
    for token in ("t1", "t2", "t3"):
        answers["token", token] = collection.find_one({"token_hash": token}, {"_id": 0})
    return answers


def stock_and_embedded():
    """The Store's step_runs collection twice, with the Store's indexes: stock mongomock and embedded."""
    stock = Store(mongomock.MongoClient().db)
    embedded = Store(mongomock.MongoClient().db, embedded=True)
    for store in (stock, embedded):
        store.ensure_indexes()
    assert type(stock.step_runs) is Collection and type(embedded.step_runs) is not Collection
    return stock.step_runs, embedded.step_runs


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(operations, max_size=25))
def test_the_embedded_step_runs_answer_as_stock_mongomock(writes):
    stock, embedded = stock_and_embedded()
    for operation in writes:
        assert apply(embedded, operation) == apply(stock, operation), operation
        assert without_ids(embedded.find({})) == without_ids(stock.find({})), operation
    assert view(embedded) == view(stock)


def test_step_runs_expire_as_stock_mongomock_expires_them(monkeypatch):
    # GIVEN a clock, a retention index of a minute, and records finished at various times (or oddly)
    clock = [BASE]
    monkeypatch.setattr(mongomock, "utcnow", lambda: clock[0])
    stock, embedded = stock_and_embedded()
    dates = [BASE - timedelta(minutes=minutes) for minutes in (0, 1, 2)] + [None, [BASE], 5]
    for collection in (stock, embedded):
        collection.create_index("ack_date", name="retention", expireAfterSeconds=60)
        for number, date in enumerate(dates):
            collection.insert_one({"event_id": "e1", "run": 0, "instance": f"s{number}", "ack_date": date})
    # WHEN time passes THEN the same records are left
    for later in (timedelta(0), timedelta(seconds=59), timedelta(minutes=1), timedelta(hours=1)):
        clock[0] = BASE + later
        assert view(embedded) == view(stock), later
    assert embedded.count_documents({"event_id": "e1"}) == 2


def test_collections_with_other_internals_are_left_as_they_are():
    class Custom(Collection):
        pass

    database = mongomock.MongoClient().db
    custom = Custom(database, "step_runs", database._store)
    assert embedded_step_runs(custom) is custom and type(custom) is Custom


@pytest.fixture
def scans(monkeypatch):
    """The filters mongomock's whole-collection scan was asked, and "expiry" for each look for expired ones."""
    calls = []
    scan, expire = Collection._iter_documents, CollectionStore._expire_documents
    monkeypatch.setattr(Collection, "_iter_documents", lambda self, filter: calls.append(filter) or scan(self, filter))
    monkeypatch.setattr(CollectionStore, "_expire_documents",
                        lambda self, index: calls.append("expiry") or expire(self, index))
    return calls


def test_the_store_writes_and_reads_step_records_without_scanning_them(scans):
    # GIVEN an embedded store with retention and 3,000 records of a map's items over two events
    store = Store.connect("mongomock://localhost/steps")
    store.ensure_indexes(event_ttl_days=30)
    for number in range(3000):
        record = {"event_id": f"e{number % 2}", "run": 0, "instance": f"m[{number}].b", "node": "b",
                  "item": number, "status": "completed", "started_at": BASE + timedelta(seconds=number),
                  "ack_date": BASE}
        if number == 7:
            record.update(status="waiting", token_hash="t7")
        assert store.insert_step_run(record)[1]
    scans.clear()
    # WHEN the Store makes every write and read of step records it makes
    again, created = store.insert_step_run({"event_id": "e1", "run": 0, "instance": "m[7].b", "status": "running"})
    assert not created and again["token_hash"] == "t7"
    assert store.update_step_run("e1", 0, "m[7].b", {"$set": {"status": "completed"}}, expect={"status": "waiting"})
    assert not store.update_step_run("e1", 0, "m[7].b", {"$set": {"status": "failed"}}, expect={"status": "waiting"})
    assert store.find_step_run_by_token("t7")["status"] == "completed"
    page, total = store.page_step_runs("e0", node="b", page=3, page_size=10)
    assert total == 1500 and [record["item"] for record in page] == list(range(40, 60, 2))
    assert len(store.step_runs_of("e1", runs=[0], limit=5)) == 5
    # THEN mongomock never scanned the collection for them
    assert scans == []

"""MongoDB's 16 MiB document limit, the same on the embedded store, over the wire test server, and on a
real MongoDB (MACHINERY_TEST_MONGO_URI): the errors pymongo raises, and the Store failing for good an
event that has no room left instead of stopping every claim at it."""

from __future__ import annotations

import bson
import pytest
from bson import ObjectId
from pymongo import ReturnDocument
from pymongo.errors import DocumentTooLarge, OperationFailure, WriteError

from machinery import events
from machinery.exceptions import TooLarge
from machinery.store import EPOCH, pending_webhook
from machinery.store.limits import MAX_DOCUMENT_BYTES
from tests.conftest import definition

MIB = 1024 * 1024


def register(store):
    for name in ("service-upper", "service-reverse", "service-space-counter"):
        store.put_service(definition(name))
    store.put_workflow(definition("workflow-process-text"))


def padded(document: dict, size: int) -> dict:
    """`document` with a `pad` string making it exactly `size` bytes of BSON."""
    document = {**document, "pad": ""}
    document["pad"] = "p" * (size - len(bson.encode(document)))
    assert len(bson.encode(document)) == size
    return document


def at_the_limit(store, room: int, **fields) -> ObjectId:
    """A pending event stored `room` bytes short of 16 MiB, its context holding a large value (as a
    record stored before its size was bounded could)."""
    event, _ = events.new_event(store, "process-text", {"message": "big"})
    document = {**store.events.find_one({"_id": ObjectId(event["event_id"])}), **fields}
    document.pop("size_bound")
    document["context"]["pad"] = ""
    document["context"]["pad"] = "p" * (MAX_DOCUMENT_BYTES - room - len(bson.encode(document)))
    assert len(bson.encode(document)) == MAX_DOCUMENT_BYTES - room
    store.events.delete_one({"_id": document["_id"]})
    store.events.insert_one(document)
    return document["_id"]


def test_a_document_over_16_mib_is_refused_on_insert_as_pymongo_and_mongodb_refuse_it(store):
    # GIVEN the events collection WHEN documents just under, just over and far over 16 MiB are inserted
    store.events.insert_one(padded({"_id": ObjectId()}, MAX_DOCUMENT_BYTES))
    # THEN just over is MongoDB's write error (code 2); past the command limit, pymongo's DocumentTooLarge
    with pytest.raises(WriteError) as over:
        store.events.insert_one(padded({"_id": ObjectId()}, MAX_DOCUMENT_BYTES + 1))
    assert over.value.code == 2 and "too large" in str(over.value)
    with pytest.raises(DocumentTooLarge):
        store.events.insert_one(padded({"_id": ObjectId()}, MAX_DOCUMENT_BYTES + MIB))
    assert store.events.count_documents({}) == 1


def test_an_update_whose_result_passes_16_mib_fails_with_17419_and_changes_nothing(store):
    # GIVEN a document 1000 bytes short of 16 MiB
    oid = store.events.insert_one(padded({"_id": ObjectId(), "items": []}, MAX_DOCUMENT_BYTES - 1000))
    oid = oid.inserted_id
    # WHEN an update or a find-and-modify would add 2000 bytes, THEN MongoDB's 17419
    with pytest.raises(WriteError) as update:
        store.events.update_one({"_id": oid}, {"$push": {"items": "i" * 2000}})
    with pytest.raises(OperationFailure) as modify:
        store.events.find_one_and_update({"_id": oid}, {"$push": {"items": "i" * 2000}},
                                         return_document=ReturnDocument.AFTER)
    assert update.value.code == modify.value.code == 17419
    assert store.events.find_one({"_id": oid})["items"] == []
    # AND what fits is written
    store.events.update_one({"_id": oid}, {"$push": {"items": "i" * 500}})
    assert len(store.events.find_one({"_id": oid})["items"]) == 1


def test_the_store_names_the_limit_when_a_new_event_is_too_large(store):
    # GIVEN a workflow, every value kept inline (the store's own limit under test, not offloading)
    # WHEN an event's data, kept twice (data and context), passes 16 MiB
    register(store)
    store.offload_bytes = 1 << 40
    with pytest.raises(TooLarge) as raised:
        events.new_event(store, "process-text", {"message": "m" * (9 * MIB)})
    # THEN TooLarge (413) naming the limit, nothing stored
    assert "16 MiB" in raised.value.message
    assert store.list_events(1, 10)[1] == 0


def test_an_update_event_past_the_limit_is_too_large_not_unavailable(store):
    register(store)
    store.offload_bytes = 1 << 40  # every value inline: the store's own limit is under test
    event, _ = events.new_event(store, "process-text", {"message": "m" * (5 * MIB)})
    with pytest.raises(TooLarge):
        store.update_event(event["event_id"], {"$set": {"outputs": {"a": "o" * (7 * MIB)}}})
    assert store.get_event(event["event_id"])["outputs"] is None


def test_an_event_with_no_room_for_a_claim_is_failed_and_the_claim_takes_the_next(store):
    # GIVEN an event stored 20 bytes short of 16 MiB (a claim's record does not fit), then a small one
    register(store)
    full = at_the_limit(store, room=20)
    small, _ = events.new_event(store, "process-text", {"message": "small"})
    # WHEN a worker claims
    claimed = store.claim_event("worker", 30)
    # THEN it gets the small one, and the full one is failed for good, naming the limit
    assert claimed["event_id"] == small["event_id"]
    failed = store.get_event(str(full))
    assert failed["status"] == "failed" and failed["error"]["kind"] == "too_large"
    assert "16 MiB" in failed["error"]["message"]
    assert failed["lease_owner"] is None and store.claim_event("worker", 30) is None


def test_an_event_with_no_room_for_its_webhook_claim_gives_it_up_and_the_next_is_delivered(store):
    # GIVEN an ended event 5 bytes short of 16 MiB with its webhook due, then a small one due after it
    register(store)
    full = at_the_limit(store, room=5, status="completed", lease_expires=EPOCH,
                        callback_url="http://hook.test/", webhook=pending_webhook())
    small, _ = events.new_event(store, "process-text", {"data": {"message": "s"}, "callback_url": "http://h.test/"})
    store.update_event(small["event_id"], {"$set": {"status": "completed", "webhook": pending_webhook()}})
    # WHEN a worker claims a webhook, THEN it gets the small one and the full one's webhook is failed
    assert store.claim_webhook("worker", 30)["event_id"] == small["event_id"]
    assert store.get_event(str(full))["webhook"]["status"] == "failed"


def test_failing_an_event_at_the_limit_makes_its_record_smaller(store):
    # GIVEN a running event whose record is 10 bytes short of 16 MiB, held by a worker
    register(store)
    oid = at_the_limit(store, room=10, status="running", lease_owner="worker")
    before = len(bson.encode(store.events.find_one({"_id": oid})))
    # WHEN it is failed as too large, THEN the failure is written and the record shrinks
    assert store.fail_too_large(str(oid), {"kind": "too_large", "message": "past 16 MiB"}, owner="worker")
    after = store.events.find_one({"_id": oid})
    assert after["status"] == "failed" and len(bson.encode(after)) < before

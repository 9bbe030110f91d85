"""The store's contract, the same on the embedded store, over pymongo, and on a real MongoDB."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

import pytest

from machinery import events
from machinery.exceptions import Conflict, NotFound
from machinery.language.expressions import compile_expression
from machinery.store import utcnow
from tests.conftest import definition


def register(store):
    for name in ("service-upper", "service-reverse", "service-space-counter"):
        store.put_service(definition(name))
    store.put_workflow(definition("workflow-process-text"))


def test_a_new_service_is_created_and_then_replaced(store):
    # GIVEN nothing registered WHEN a service is put twice
    first, created = store.put_service(definition("service-upper"))
    second, created_again = store.put_service({**definition("service-upper"), "address": "http://x:1/"})
    # THEN the first put creates, the second replaces the same document
    assert created and not created_again
    assert first["service_id"] == second["service_id"] and second["address"] == "http://x:1/"


def test_dates_come_back_timezone_aware_utc(store):
    service, _ = store.put_service(definition("service-upper"))
    assert service["ack_date"].tzinfo is not None
    assert abs(service["ack_date"] - datetime.now(timezone.utc)) < timedelta(seconds=30)


def test_definitions_are_found_by_id_or_name_and_unknown_ones_raise(store):
    service, _ = store.put_service(definition("service-upper"))
    assert store.get_service(service["service_id"])["name"] == "upper"
    assert store.get_service("upper")["service_id"] == service["service_id"]
    for ref in ("nope", "123", "6b08b8b8c0a1e7920e84c1fb"):
        with pytest.raises(NotFound):
            store.get_service(ref)


def test_workflow_versions_count_replacements(store):
    register(store)
    again, created = store.put_workflow(definition("workflow-process-text"))
    assert not created and again["version"] == 2


def test_a_workflow_read_by_name_or_id_reflects_every_later_write(store):
    register(store)
    workflow_id = store.get_workflow("process-text")["workflow_id"]
    assert store.get_workflow(workflow_id)["version"] == 1
    store.get_workflow("process-text")["version"] = 99  # a caller's copy: changing it changes nothing stored
    store.put_workflow(definition("workflow-process-text"))
    assert store.get_workflow("process-text")["version"] == store.get_workflow(workflow_id)["version"] == 2
    store.delete_workflow("process-text")
    for ref in ("process-text", workflow_id):
        with pytest.raises(NotFound):
            store.get_workflow(ref)


def test_a_service_in_use_cannot_be_deleted(store):
    register(store)
    with pytest.raises(Conflict) as raised:
        store.delete_service("reverse")
    assert raised.value.errors == {"workflows": ["process-text"]}


def test_pages_are_sorted_and_counted(store):
    register(store)
    items, total = store.list_services(page=1, page_size=2)
    assert total == 3 and [s["name"] for s in items] == ["reverse", "space-counter"]


def test_an_idempotency_key_returns_the_first_event(store):
    register(store)
    first, created = events.new_event(store, "process-text", {"data": {"message": "a"}, "idempotency_key": "k"})
    again, created_again = events.new_event(store, "process-text", {"data": {"message": "b"}, "idempotency_key": "k"})
    assert created and not created_again and again["event_id"] == first["event_id"]
    other, created_other = events.new_event(store, "process-text", {"data": {"message": "c"}})
    assert created_other and other["event_id"] != first["event_id"]


def test_concurrent_duplicates_make_one_event(store):
    # GIVEN a workflow WHEN 20 threads send the same idempotency key at once
    register(store)
    results = []
    barrier = threading.Barrier(20)

    def send():
        barrier.wait()
        results.append(events.new_event(store, "process-text", {"data": {"message": "x"}, "idempotency_key": "same"}))

    threads = [threading.Thread(target=send) for _ in range(20)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    # THEN exactly one was created and all share its id
    assert sum(created for _, created in results) == 1
    assert len({event["event_id"] for event, _ in results}) == 1
    assert store.list_events(1, 100)[1] == 1


def test_a_claim_takes_each_pending_event_once(store):
    register(store)
    for n in range(5):
        events.new_event(store, "process-text", {"message": f"m{n}"})
    claimed = []
    lock = threading.Lock()

    def claim(owner):
        while (event := store.claim_event(owner, 30)) is not None:
            with lock:
                claimed.append(event["event_id"])

    threads = [threading.Thread(target=claim, args=(f"w{n}",)) for n in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(claimed) == 5 and len(set(claimed)) == 5


def test_whole_numbers_past_32_bits_come_back_as_plain_ints_that_expressions_can_reduce(store):
    # GIVEN an event whose data holds numbers MongoDB keeps as int64 (millisecond timestamps, large ids)
    register(store)
    store.events.insert_one({"status": "pending", "context": {"at_ms": [1_733_500_000_000, 1_733_500_000_500],
                                                              "order": 5_000_000_000, "small": 7}})
    # WHEN a worker reads it back, THEN they are ints (not bson's Int64), as the embedded store answers them
    read = store.events.find_one({"status": "pending"})["context"]
    assert read == {"at_ms": [1_733_500_000_000, 1_733_500_000_500], "order": 5_000_000_000, "small": 7}
    assert {type(value) for value in (*read["at_ms"], read["order"], read["small"])} == {int}
    # AND JMESPath's functions take them as numbers (they refuse an Int64: "invalid type")
    assert compile_expression("max(at_ms)").search(read) == 1_733_500_000_500
    assert compile_expression("sum([order, small])").search(read) == 5_000_000_007


def test_an_expired_lease_lets_another_owner_resume(store):
    register(store)
    # GIVEN an event held by an owner WHEN its lease is still valid THEN nobody else can claim it
    event, _ = events.new_event(store, "process-text", {"message": "m"}, owner="dead", lease_s=60)
    assert store.claim_event("alive", 30) is None
    # WHEN the lease expires THEN another owner resumes it
    store.update_event(event["event_id"], {"$set": {"lease_expires": utcnow() - timedelta(seconds=1)}})
    resumed = store.claim_event("alive", 30)
    assert resumed["lease_owner"] == "alive"
    assert [claim["owner"] for claim in resumed["claims"]] == ["dead", "alive"]
    # AND the dead owner's writes no longer land
    assert not store.update_event(event["event_id"], {"$set": {"next_step": 1}}, owner="dead")


def test_leases_are_renewed_only_for_their_owner(store):
    register(store)
    event, _ = events.new_event(store, "process-text", {"message": "m"}, owner="me", lease_s=1)
    assert store.renew_leases("me", [event["event_id"]], 60) == 1
    assert store.renew_leases("other", [event["event_id"]], 60) == 0
    assert store.get_event(event["event_id"])["lease_expires"] > datetime.now(timezone.utc) + timedelta(seconds=50)


def test_released_events_are_claimable_at_once(store):
    register(store)
    event, _ = events.new_event(store, "process-text", {"message": "m"}, owner="me", lease_s=60)
    assert store.claim_event("other", 30) is None
    assert store.release_event(event["event_id"], "me")
    assert store.claim_event("other", 30)["event_id"] == event["event_id"]


def test_events_are_listed_newest_first_and_filtered(store):
    register(store)
    ids = [events.new_event(store, "process-text", {"message": f"m{n}"})[0]["event_id"] for n in range(3)]
    items, total = store.list_events(1, 10, status="pending")
    assert total == 3 and [e["event_id"] for e in items] == ids[::-1]
    assert "plan" not in items[0]
    assert store.list_events(1, 10, status="failed") == ([], 0)


def test_the_retention_index_follows_the_setting(store):
    store.ensure_indexes(event_ttl_days=2)
    indexes = {index["name"]: index for index in store.events.list_indexes()}
    assert indexes["retention"]["expireAfterSeconds"] == 2 * 86400
    store.ensure_indexes(event_ttl_days=None)
    assert "retention" not in {index["name"] for index in store.events.list_indexes()}


def test_rollups_add_up_across_recorders_and_expire_on_their_bucket(store):
    from machinery import rollups

    when = datetime.now(timezone.utc)  # a bucket past the expiry would be gone
    bucket = rollups.bucket_of(when)
    for count in (2, 3):
        recorder = rollups.Recorder(store, flush_s=3600)
        for _ in range(count):
            recorder.event_finished("orders", "completed", 40.0, when=when)
            recorder.step_finished("orders", "reserve", "stock", "completed", 10.0 * count, when=when)
        recorder.event_finished("orders", "failed", 400.0, when=when)
        assert recorder.flush() == 1
    [doc] = store.rollups_since(bucket - timedelta(hours=1))
    assert doc["bucket"].replace(tzinfo=None) == bucket
    assert (doc["n"], doc["completed"], doc["failed"]) == (7, 5, 2)
    assert doc["steps"]["reserve"] == {"service": "stock", "n": 5, "ms": 130.0, "max_ms": 30.0}
    assert sum(doc["h"].values()) == 7
    assert store.rollups_since(bucket + timedelta(minutes=5)) == []
    expiry = {index["name"]: index for index in store.rollups.list_indexes()}["rollups_expiry"]
    assert expiry["expireAfterSeconds"] == rollups.RETAIN_S

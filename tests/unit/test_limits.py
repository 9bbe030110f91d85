"""Counting an event's BSON size as it is written: exact where it must be, an upper bound where that is
cheaper, and never under what MongoDB counts."""

from __future__ import annotations

import copy
from datetime import datetime, timezone

import bson
from bson import ObjectId
from hypothesis import given, settings
from hypothesis import strategies as st

from machinery.runtime.executor import record_bound
from machinery.store.limits import EVENT_LIMIT_BYTES, EventSize, RecordSize, element_size

scalars = st.one_of(st.none(), st.booleans(), st.integers(-(2 ** 63), 2 ** 63 - 1), st.floats(allow_nan=False),
                    st.text(max_size=40), st.datetimes(), st.just(ObjectId("0" * 24)))
values = st.recursive(scalars, lambda inner: st.one_of(st.lists(inner, max_size=20),
                                                       st.dictionaries(st.text(max_size=8), inner, max_size=20)),
                      max_leaves=40)
keys = st.text(min_size=1, max_size=10).filter(lambda key: "\0" not in key)


@given(keys, values)
@settings(max_examples=300, deadline=None)
def test_an_element_is_counted_as_bson_encodes_it(key, value):
    # GIVEN any value an event may hold WHEN its element is counted THEN it is what bson encodes
    if isinstance(value, dict) and any("\0" in name for name in value):
        return
    try:
        encoded = len(bson.encode({key: value})) - 5
    except bson.errors.InvalidDocument:
        return
    assert element_size(key, value) == encoded


def test_an_event_size_follows_every_write_exactly():
    # GIVEN an event WHEN steps are written one by one (context keys replaced and added, fields set
    # and unset, a new array pushed to) THEN the count is the stored document's size after each
    event = {"event_id": "e" * 24, "status": "running", "context": {"message": "hé" * 100, "n": 3},
             "steps": [], "data": {"message": "a"}, "next_step": 0, "waiting": {"a": 1}}
    size, stored = EventSize(event), copy.deepcopy(event)
    assert size.total == len(bson.encode(stored))
    for number in range(30):
        changes = {("message", "n", f"k{number}")[number % 3]: ("x" * number, 2 ** 40, {"a": [1.5]})[number % 3]}
        record = {"step": number, "outputs": changes, "at": datetime(2030, 1, 1)}
        update = {"$set": {"context": None, "next_step": number, "status": ("running", "completed")[number % 2]},
                  "$push": {"steps": record}}
        if number % 7 == 3:
            update["$unset"] = {"waiting": ""}
        elif number % 11 == 5:
            update["$set"]["waiting"] = {"b": "x" * number}
        if number == 20:
            update["$push"]["spent_tokens"] = "t" * 64
        total = size.after(update, changes)
        size.commit()
        stored["context"].update(changes)
        stored.update({key: value for key, value in update["$set"].items() if key != "context"})
        for key in update.get("$unset", {}):
            stored.pop(key, None)
        for key, item in update["$push"].items():
            stored.setdefault(key, []).append(item)
        assert total == len(bson.encode(stored)), number


def test_a_record_size_is_an_upper_bound_until_it_nears_the_limit_then_exact():
    # GIVEN an event stored with its size bound
    event = {"event_id": "e" * 24, "context": {"m": "a"}, "steps": [], "size_bound": 0}
    event["size_bound"] = len(bson.encode(event))
    size = RecordSize(event)
    # WHEN small steps are written THEN the bound never falls under the size
    stored = copy.deepcopy(event)
    for number in range(5):
        record = {"step": number, "outputs": {"m": "b" * 100}}
        update = {"$set": {"context": {"m": "b" * 100}}, "$push": {"steps": record}}
        bound = size.after(update, {"m": "b" * 100})
        size.commit(update)
        stored.update(update["$set"])
        stored["steps"].append(record)
        assert bound >= len(bson.encode(stored)) and bound == stored["size_bound"]
    # WHEN a write's bound passes the limit THEN what is checked is the exact size (the replaced
    # value is not counted twice)
    big = "c" * (EVENT_LIMIT_BYTES // 2 + 1000)
    for number in (5, 6):
        record = {"step": number, "outputs": {}}
        update = {"$set": {"context": {"m": big}}, "$push": {"steps": record}}
        checked = size.after(update, {"m": big})
        size.commit(update)
        stored.update(update["$set"])
        stored["steps"].append(record)
    assert checked == len(bson.encode(stored)) < EVENT_LIMIT_BYTES


def test_a_step_record_is_bounded_without_encoding_it():
    # GIVEN records as the executor writes them: completed, failed after retries, waiting
    at = datetime(2030, 1, 1, tzinfo=timezone.utc)
    attempt = {"attempt": 1, "at": at, "outcome": "http_status", "status": 503, "error": "replied 503: é" * 20,
               "duration_ms": 12.5, "retry_in_s": 0.25}
    records = [
        {"step": 99, "service": "s" * 100, "status": "completed", "run": 2 ** 40, "attempts": 1, "started_at": at,
         "span_id": "a" * 16, "attempt_log": [{"attempt": 1, "at": at, "outcome": "ok", "status": 200,
                                               "duration_ms": 1.0}], "finished_at": at, "duration_ms": 3.0,
         "outputs": {"message": "ü" * 50, "n": [1, 2, 3]}},
        {"step": 0, "service": "x", "status": "failed", "run": 0, "attempts": 20, "started_at": at, "span_id": "b" * 16,
         "attempt_log": [attempt] * 20, "finished_at": at, "duration_ms": 9.0,
         "error": {"kind": "http_status", "message": "replied 503: down (after 20 attempts)", "status": 503}},
        {"step": 3, "service": "slow", "status": "failed", "run": 1, "attempts": 1, "started_at": at,
         "span_id": "c" * 16, "attempt_log": [], "error": {"kind": "too_large", "message": "m"},
         "outputs_dropped": True},
    ]
    # WHEN each is bounded THEN the bound is at least what bson encodes
    for record in records:
        assert record_bound(record) >= len(bson.encode(record))

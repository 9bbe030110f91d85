"""What a value kept as a file must be (JSON), and what a value kept in a document must be (BSON's rules)."""

from __future__ import annotations

import pytest

from machinery.exceptions import InvalidData
from machinery.runtime.payloads import check_storable, encoded, storable_problems

THRESHOLD = 1024


def test_a_large_value_need_only_be_json():
    large = {"$where": "x" * 2000, "a.b": 1}  # MongoDB's key rules do not hold inside a file
    assert storable_problems(large, "doc", THRESHOLD) == []
    check_storable({"doc": large}, "data", THRESHOLD)


def test_a_small_value_keeps_mongodb_rules():
    problems = storable_problems({"$where": 1}, "doc", THRESHOLD)
    assert problems and "$" in problems[0]
    with pytest.raises(InvalidData) as refused:
        check_storable({"doc": {"$where": 1}}, "data", THRESHOLD)
    assert "data cannot be stored" in refused.value.message


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), "\ud800"])
def test_a_large_value_that_is_not_json_is_named(bad):
    problems = storable_problems({"pad": "x" * 2000, "bad": bad}, "doc", THRESHOLD)
    assert problems and problems[0].startswith("doc.bad")


def test_a_top_level_key_is_checked_whatever_the_size_of_its_value():
    with pytest.raises(InvalidData):
        check_storable({"$doc": "x" * 2000}, "data", THRESHOLD)


def test_without_a_threshold_every_value_is_checked_as_a_document_holds_it():
    assert storable_problems({"$where": "x" * 2000}, "doc", None)


def test_a_value_is_encoded_once_for_its_check_and_its_file():
    value = "é" * 3000
    assert encoded(value) is encoded(value) and encoded(value) == ('"' + value + '"').encode()


class _Values:
    def __init__(self):
        self.stored = {}

    def put(self, event_id, data, sha256):
        self.stored[sha256] = data
        return f"{event_id}-{sha256}", sha256


class _Store:
    offload_bytes = THRESHOLD

    def __init__(self):
        self.values = _Values()


def test_a_context_value_a_document_cannot_hold_is_offloaded_whatever_its_size():
    from machinery.runtime.payloads import Payloads, is_ref

    values = Payloads(_Store(), "e" * 24)
    context = {"items": [{"$kind": "a"}], "n": 1}  # read out of an offloaded value by an expression
    assert values.offload(context, THRESHOLD) is context  # checked values: kept as they are
    kept = values.offload(context, THRESHOLD, checked=False)
    assert is_ref(kept["items"]) and kept["n"] == 1

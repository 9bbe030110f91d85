"""What a value kept as a file must be (JSON), and what a value kept in a document must be (BSON's rules)."""

from __future__ import annotations

import gc
import weakref

import pytest

from machinery.app import create_app
from machinery.exceptions import InvalidData
from machinery.runtime import payloads
from machinery.runtime.payloads import check_storable, encoded, forget_encoded, storable_problems

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


class _Large(list):
    """A large JSON value that can be watched (a plain list cannot be weakly referenced)."""


def _gone(watched: weakref.ref) -> bool:
    gc.collect()
    return watched() is None


def test_a_large_value_checked_but_not_stored_is_let_go_with_its_json():
    value = _Large(["x" * 100] * 50)
    watched = weakref.ref(value)
    assert storable_problems(value, "doc", THRESHOLD) == []  # encoded to check it, kept for its file
    del value
    assert not _gone(watched)
    forget_encoded()
    assert _gone(watched)


def test_a_request_whose_event_is_refused_leaves_no_large_value_with_its_thread():
    app = create_app({"MONGO_URI": "mongomock://localhost/forget", "EMBEDDED_WORKERS": 0, "OFFLOAD_BYTES": THRESHOLD})
    try:
        client = app.test_client()
        assert client.post("/workflows", json={
            "name": "refuses", "steps": [{"id": "nap", "sleep": {"seconds": 1}}],
            "inputs": [{"name": "doc", "type": "any"}, {"name": "n", "type": "integer"}],
            "outputs": []}).status_code == 201, "registered"
        # The test client serves the request in this thread: what the request leaves is this thread's.
        reply = client.post("/e/refuses", json={"doc": ["x" * 100] * 50, "n": "not a number"})
        assert reply.status_code == 422 and "n" in reply.get_json()["errors"]
        assert getattr(payloads._last, "encoded", None) is None
    finally:
        app.extensions["machinery"].close(grace_s=2)


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

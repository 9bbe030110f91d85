"""Nested replies checked against their service's declared outputs, each problem named by its path."""

from __future__ import annotations

import pytest

from machinery import events
from machinery.config import load_config
from machinery.exceptions import InvalidData
from machinery.runtime.executor import Executor
from machinery.store import Store
from tests.unit.test_executor import OWNER, FakeSession, reply

LINES = {"type": "array", "items": {"type": "object", "fields": [
    {"name": "sku", "type": "string"}, {"name": "qty", "type": "int"}]}}
ORDER = {"type": "object", "fields": [{"name": "total", "type": "float"}, {"name": "lines", "type": LINES},
                                      {"name": "coupon", "type": "string", "nullable": True, "required": False}]}


@pytest.fixture
def store():
    store = Store.connect("mongomock://localhost/typed-replies")
    store.ensure_indexes()
    return store


def run_order(store, body, *more):
    store.put_service({"name": "orders", "address": "http://orders.test/", "retry": None, "timeout_s": None,
                       "inputs": [{"name": "order_id", "type": "string"}],
                       "outputs": [{"name": "order", "type": ORDER}]})
    store.put_service({"name": "pack", "address": "http://pack.test/", "retry": None, "timeout_s": None,
                       "inputs": [{"name": "order", "type": ORDER}], "outputs": [{"name": "packed", "type": "bool"}]})
    steps = ["orders", "pack"] if more else ["orders"]
    store.put_workflow({"name": "w", "services": steps, "inputs": [{"name": "order_id", "type": "string"}],
                        "outputs": [{"name": "order", "type": ORDER}], "operations": []})
    event, _ = events.new_event(store, "w", {"data": {"order_id": "o-1"}}, owner=OWNER)
    session = FakeSession(reply(body=body), *(reply(body=item) for item in more))
    executor = Executor(store, load_config({}), connections=lambda: session,
                        sleep=lambda _: None, rand=lambda: 1.0)
    executor.run(event, OWNER)
    return store.get_event(event["event_id"])


def lines(count, **changes):
    return [{"sku": f"s{n}", "qty": 1, **(changes if n == count - 1 else {})} for n in range(count)]


def test_a_nested_reply_that_matches_completes(store):
    order = {"total": 3.0, "lines": lines(3), "coupon": None, "extra": True}
    event = run_order(store, {"order": order})
    assert event["status"] == "completed" and event["outputs"] == {"order": order}


@pytest.mark.parametrize("order, path, problem", [
    ({"total": 3, "lines": lines(4, sku=7)}, "order.lines[3].sku", "expected string, got int"),
    ({"total": 3, "lines": lines(2, qty=None)}, "order.lines[1].qty", "expected int, got null"),
    ({"lines": []}, "order.total", "missing (expected float)"),
    ({"total": 3, "lines": {"sku": "a"}}, "order.lines", "expected array, got object"),
])
def test_a_reply_that_does_not_match_is_a_contract_failure_naming_the_path(store, order, path, problem):
    event = run_order(store, {"order": order})
    assert event["status"] == "failed" and event["error"]["kind"] == "contract"
    assert f"{path}: {problem}" in event["error"]["message"]
    assert event["steps"][0]["error"]["fields"] == {path: problem}


def test_a_replayed_context_value_is_checked_against_its_nested_type(store):
    event = run_order(store, {"order": {"total": 1, "lines": lines(1)}}, {"packed": True})
    assert event["status"] == "completed"
    with pytest.raises(InvalidData) as raised:
        events.retry_event(store, event["event_id"], from_step=1,
                           context={"order": {"total": 1, "lines": lines(2, sku=None)}})
    assert "order.lines[1].sku: expected string, got null" in raised.value.message
    assert raised.value.errors == {"order.lines[1].sku": "expected string, got null"}
    replayed = events.retry_event(store, event["event_id"], from_step=1,
                                  context={"order": {"total": 2, "lines": lines(2)}})
    assert replayed["status"] == "pending" and replayed["context"]["order"]["total"] == 2

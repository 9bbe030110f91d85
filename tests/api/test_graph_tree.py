"""A tree of steps drawn: decisions with their conditions, parallel lanes, a map's box, in SVG, Mermaid and DOT,
and on the workflow page; a linear workflow is drawn as before."""

from __future__ import annotations

import pytest

from machinery import cli
from tests.conftest import DEFINITIONS


@pytest.fixture
def registered(client):
    assert client.put("/secrets/orders_token", json={"value": "a-token-for-drawing"}).status_code in (200, 201)
    for kind, definition, _ in cli.read_definitions([str(DEFINITIONS)]):
        response = client.post("/services" if kind == "service" else "/workflows", json=definition)
        assert response.status_code in (200, 201), response.get_json()
    return client


def test_the_svg_of_a_tree_draws_each_kind(registered):
    response = registered.get("/workflows/order-fulfil/graph")
    assert response.status_code == 200 and response.mimetype == "image/svg+xml"
    text = response.get_data(as_text=True)
    assert 'class="node decision" data-node="big"' in text and "big: if total &gt; 500" in text
    assert 'class="node map" data-node="reserve"' in text and "reserve: \u00d7 lines (\u2264 8)" in text
    assert 'class="node parallel" data-node="notify"' in text
    assert 'data-branch="mail"' in text and 'data-branch="sms"' in text
    assert "POST /notifications/{channel}" in text and "GET /orders/{order_id}" in text


def test_mermaid_and_dot_draw_the_same_structure(registered):
    mermaid = registered.get("/workflows/order-fulfil/graph?format=mermaid").get_data(as_text=True)
    assert mermaid.startswith("flowchart TD")
    assert '-->|"then"|' in mermaid and '-->|"else"|' in mermaid
    assert 'subgraph' in mermaid and "\u2264 8" in mermaid and '["mail"]' in mermaid
    dot = registered.get("/workflows/order-fulfil/graph?format=dot").get_data(as_text=True)
    assert "subgraph cluster_" in dot and "shape=diamond" in dot and '[label="then"]' in dot


def test_the_workflow_page_draws_the_tree_and_a_linear_workflow_as_before(registered):
    page = registered.get("/ui/workflows/word-shapes")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "workflow-graph tree" in text and "each: \u00d7 words (\u2264 4)" in text and 'data-branch="loud"' in text
    linear = registered.get("/ui/workflows/process-text").get_data(as_text=True)
    assert "workflow-graph" in linear and "workflow-graph tree" not in linear


def test_the_event_page_of_a_tree_event_draws_its_progress_and_lists_failed_items(registered, store):
    """A tree event stored in the shape the runtime writes (its progress summary and a failed map item)."""
    from machinery.events import new_event

    event, _ = new_event(store, "order-fulfil", {"order_id": "A-1003"})
    progress = {"order": {"n": 1, "done": 1}, "big": {"n": 1, "done": 1, "taken": {"then": 1}},
                "reserve": {"n": 3, "done": 2, "failed": 1}, "hold": {"n": 3, "done": 2, "failed": 1}}
    store.update_event(event["event_id"], {"$set": {"status": "failed", "progress": progress, "error": {
        "kind": "http_status", "message": "replied 409", "step": "hold", "instance": "reserve[2]/hold"}}})
    store.insert_step_run({"event_id": event["event_id"], "run": 0, "instance": "reserve[2]/hold", "node": "hold",
                           "kind": "call", "items": [2], "item": 2, "service": "reserve", "status": "failed",
                           "error": {"kind": "http_status", "message": "replied 409: only 0 of SKU-3 left"},
                           "attempts": 1, "ack_date": event["ack_date"]})
    page = registered.get(f"/ui/events/{event['event_id']}")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert "Steps as a tree" in text and 'class="lane taken" data-branch="then"' in text
    assert "2 done, 1 failed of 3" in text and 'class="progress-done"' in text
    assert "reserve[2]/hold" in text and "only 0 of SKU-3 left" in text
    assert f"/events/{event['event_id']}/steps?node=hold&amp;item=2" in text


def _tree_event_with_records(store, items: int):
    """A completed tree event whose step records are its top-level `order` and `items` map items."""
    from datetime import timedelta

    from machinery.events import new_event

    event, _ = new_event(store, "order-fulfil", {"order_id": "A-1003"})
    store.update_event(event["event_id"], {"$set": {"status": "completed", "progress": {"order": {"n": 1, "done": 1}}}})
    start = event["ack_date"]
    store.insert_step_run({"event_id": event["event_id"], "run": 0, "instance": "order", "node": "order",
                           "kind": "call", "item": None, "service": "orders", "status": "completed", "attempts": 1,
                           "started_at": start, "duration_ms": 1.0, "finished_at": start + timedelta(milliseconds=1)})
    for number in range(items):
        at = start + timedelta(milliseconds=2 + number)
        store.insert_step_run({"event_id": event["event_id"], "run": 0, "instance": f"reserve[{number}]/hold",
                               "node": "hold", "kind": "call", "items": [number], "item": number, "service": "reserve",
                               "status": "completed", "attempts": 1, "started_at": at, "duration_ms": 1.0,
                               "finished_at": at + timedelta(milliseconds=1)})
    return event


@pytest.mark.parametrize("items", [3, 2100])
def test_the_event_page_of_a_tree_event_reads_its_step_records_once_unless_the_timeline_is_cut(registered, store,
                                                                                             items, monkeypatch):
    """The timeline's read holds the top-level records; past what the timeline draws, they are read on their own."""
    from machinery.api import ui

    event = _tree_event_with_records(store, items)
    reads = []
    original = type(store).step_runs_of

    def counted(self, *args, **kwargs):
        reads.append(kwargs.get("top_only", False))
        return original(self, *args, **kwargs)

    monkeypatch.setattr(type(store), "step_runs_of", counted)
    text = registered.get(f"/ui/events/{event['event_id']}").get_data(as_text=True)
    assert reads == ([False] if items <= ui.TIMELINE_RECORDS else [False, True])
    # Below the timeline, its one top-level record (`order`) and none of the map's items.
    assert text.count('<details class="step-record ') == 1 and 'id="step-record-0"' in text

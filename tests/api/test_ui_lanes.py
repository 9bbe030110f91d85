"""A tree event's page: its step runs in lanes on the timeline, its maps' progress bars, the branches taken,
and its failed items each with its error and a link to its record."""

from __future__ import annotations

import re
from datetime import timedelta

import pytest

from machinery import cli
from machinery.event_view import MAX_LANES
from tests.conftest import DEFINITIONS


@pytest.fixture
def registered(client):
    assert client.put("/secrets/orders_token", json={"value": "a-token-for-drawing"}).status_code in (200, 201)
    for kind, definition, _ in cli.read_definitions([str(DEFINITIONS)]):
        response = client.post("/services" if kind == "service" else "/workflows", json=definition)
        assert response.status_code in (200, 201), response.get_json()
    return client


def stored_event(store, records, progress, status="completed"):
    """An order-fulfil event in the shape the runtime writes: its progress, and one record per step run
    given as (instance, node, item, start ms, length ms, status)."""
    from machinery.events import new_event

    event, _ = new_event(store, "order-fulfil", {"order_id": "A-1003"})
    start = event["ack_date"]
    end = max(begin + length for _, _, _, begin, length, _ in records)
    store.update_event(event["event_id"], {"$set": {"status": status, "progress": progress,
                                                    "finished_at": start + timedelta(milliseconds=end)}})
    for instance, node, item, begin, length, state in records:
        record = {"event_id": event["event_id"], "run": 0, "instance": instance, "node": node, "kind": "call",
                  "items": [] if item is None else [item], "item": item, "service": "notify", "status": state,
                  "attempts": 1, "ack_date": start, "started_at": start + timedelta(milliseconds=begin),
                  "finished_at": start + timedelta(milliseconds=begin + length), "duration_ms": length}
        if state == "failed":
            record["error"] = {"kind": "http_status", "message": f"replied 409: {instance} is sold out"}
        store.insert_step_run(record)
    return event["event_id"]


def lanes_of(html: str) -> list[list[tuple[float, float, str]]]:
    """Each lane row of the timeline as its bars' (left %, width %, instance)."""
    rows = re.findall(r'<li class="lane lane-row">(.*?)</li>', html, re.S)
    return [[(float(left), float(width), instance) for instance, left, width in
             re.findall(r'data-instance="([^"]+)" style="left: ([\d.]+)%; width: ([\d.]+)%"', row)] for row in rows]


def test_parallel_branches_are_drawn_in_lanes_that_do_not_overlap(registered, store):
    event_id = stored_event(store, [
        ("order", "order", None, 0, 100, "completed"),
        ("reserve[0]/hold", "hold", 0, 100, 100, "completed"),
        ("reserve[1]/hold", "hold", 1, 100, 150, "completed"),
        ("mail", "mail", None, 300, 400, "completed"),
        ("sms", "sms", None, 300, 200, "completed"),
    ], {"order": {"n": 1, "done": 1}, "big": {"n": 1, "done": 1, "taken": {"else": 1}},
        "reserve": {"n": 2, "done": 2}, "hold": {"n": 2, "done": 2}, "notify": {"n": 1, "done": 1}})
    html = registered.get(f"/ui/events/{event_id}").get_data(as_text=True)
    rows = lanes_of(html)
    assert [[instance for _, _, instance in row] for row in rows] == [
        ["order", "reserve[1]/hold", "mail"], ["reserve[0]/hold", "sms"]]  # of two starting at once, the longer first
    for row in rows:
        for (left, width, _), (next_left, _, _) in zip(row, row[1:], strict=False):
            assert left + width <= next_left
    # A top-level run links to its record on the page; a map item, to its record in the API.
    assert re.search(r'href="#step-record-\d+" data-instance="mail"', html)
    assert f'href="/events/{event_id}/steps?node=hold&amp;item=1" data-instance="reserve[1]/hold"' in html
    assert 'id="step-record-' in html and "reserve[1]/hold</span> \u00b7" not in html  # items are not detailed


def test_the_page_shows_each_maps_progress_bar_and_the_branch_taken(registered, store):
    event_id = stored_event(store, [
        ("order", "order", None, 0, 100, "completed"),
        ("fraud", "fraud", None, 100, 50, "completed"),
        ("reserve[0]/hold", "hold", 0, 150, 50, "completed"),
        ("reserve[1]/hold", "hold", 1, 150, 60, "completed"),
        ("reserve[2]/hold", "hold", 2, 150, 70, "failed"),
    ], {"order": {"n": 1, "done": 1}, "big": {"n": 1, "done": 1, "taken": {"then": 1}},
        "reserve": {"n": 4, "done": 2, "failed": 1, "running": 1}, "hold": {"n": 4, "done": 2, "failed": 1}},
        status="failed")
    html = registered.get(f"/ui/events/{event_id}").get_data(as_text=True)
    assert '<progress max="4" value="3"' in html
    assert '2 done, <span class="error-text">1 failed</span>, 1 running of 4' in html
    assert re.search(r'data-node="big">.*?took <strong class="taken">then</strong>', html, re.S)
    failed = re.search(r'<ul class="failed-items">(.*?)</ul>', html, re.S).group(1)
    assert "reserve[2]/hold" in failed and "replied 409: reserve[2]/hold is sold out" in failed
    assert f'href="/events/{event_id}/steps?node=hold&amp;item=2"' in failed
    assert "bar bar-red" in html  # the failed item's bar


def test_more_runs_at_once_than_the_cap_are_folded_and_said(registered, store):
    many = MAX_LANES + 5
    event_id = stored_event(store, [(f"reserve[{n}]/hold", "hold", n, 10, 500, "completed") for n in range(many)],
                            {"reserve": {"n": many, "done": many}})
    html = registered.get(f"/ui/events/{event_id}").get_data(as_text=True)
    assert len(lanes_of(html)) == MAX_LANES
    assert "5 more runs are folded: more than 32 overlap at this scale" in html


def test_a_chain_event_keeps_one_row_per_step(registered, store):
    html = registered.get("/ui/events").get_data(as_text=True)
    assert "lane-row" not in html


def test_the_page_of_a_tree_event_that_ran_draws_every_run(client, example_services):
    from tests.conftest import register_examples

    register_examples(client, example_services)
    (definition,) = [d for kind, d, _ in cli.read_definitions([str(DEFINITIONS / "workflow-word-shapes.yaml")])]
    assert client.post("/workflows", json=definition).status_code == 201
    sent = client.post("/e/word-shapes", json={"data": {"message": "a map of parallel steps"}})
    assert sent.status_code == 201, sent.get_json()
    page = client.get(f"/ui/events/{sent.get_json()['event_id']}")
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    drawn = [instance for row in lanes_of(html) for _, _, instance in row]
    # words, then 5 words x (upper, reverse), then the space count of a text longer than 20.
    assert sorted(drawn) == sorted(["split", "long/count"] + [f"each[{n}]/shapes/{step}" for n in range(5)
                                                         for step in ("shout", "mirror")])
    assert '<progress max="5" value="5"' in html and "took <strong class=\"taken\">then</strong>" in html
    assert "not kept in this record" in html  # a tree's records keep no copy of their inputs

"""A tree event's page and the definition editor in headless Chromium: step runs in lanes, the page that
follows a running event live, and the editor that checks as you type and registers."""

from __future__ import annotations

import threading
import time

import pytest
from flask import Flask, jsonify, request

from machinery.app import create_app
from machinery.serving import ServerThread
from tests.browser.conftest import shoot

pytestmark = pytest.mark.browser

STRING = [{"name": "message", "type": "string"}]


def expect(target):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


class Services:
    """`slow` answers after 300 ms; `gate` answers once the test opens it."""

    def __init__(self):
        self.gate = threading.Event()
        app = Flask("tree-browser-services")

        @app.post("/slow")
        def slow():
            time.sleep(0.3)
            return jsonify({"message": request.get_json()["message"].upper()})

        @app.post("/gate")
        def gate():
            self.gate.wait(30)
            return jsonify({"message": request.get_json()["message"][::-1]})

        self.server = ServerThread(app).start()


FAN_OUT = {"name": "fan-out", "inputs": STRING,
           "outputs": [{"name": name, "type": "string"} for name in ("a", "b", "c")],
           "steps": [{"id": "fan", "parallel": {
               name: [{"id": f"call_{name}", "call": "slow", "out": {"message": name}}] for name in ("a", "b", "c")}},
               {"id": "after", "call": "slow", "in": {"message": "a"}, "out": {"message": "a"}}]}
GATED = {"name": "gated", "inputs": STRING, "outputs": STRING,
         "steps": [{"id": "first", "call": "slow"}, {"id": "held", "call": "gate"}]}


class Tree:
    def __init__(self, app, server, services):
        self.app, self.server, self.services = app, server, services

    @property
    def url(self) -> str:
        return self.server.url.rstrip("/")

    def send(self, workflow: str, mode: str = "sync") -> str:
        response = self.app.test_client().post(f"/e/{workflow}?mode={mode}", json={"data": {"message": "tree"}})
        assert response.status_code in (201, 202), response.get_json()
        return response.get_json()["event_id"]


@pytest.fixture(scope="module")
def tree():
    services = Services()
    app = create_app({"MONGO_URI": "mongomock://localhost/machinery-tree-browser", "EMBEDDED_WORKERS": 1,
                      "POLL_S": 0.05})
    client = app.test_client()
    for name in ("slow", "gate"):
        service = {"name": name, "address": f"{services.server.url.rstrip('/')}/{name}", "inputs": STRING,
                   "outputs": STRING, "timeout_s": 40}
        assert client.post("/services", json=service).status_code == 201
    for workflow in (FAN_OUT, GATED):
        response = client.post("/workflows", json=workflow)
        assert response.status_code == 201, response.get_json()
    server = ServerThread(app).start()
    try:
        yield Tree(app, server, services)
    finally:
        services.gate.set()
        server.stop()
        app.extensions["machinery"].close(grace_s=2)
        services.server.stop()


def test_parallel_branches_are_drawn_in_lanes_whose_bars_do_not_overlap(tree, open_page):
    event_id = tree.send("fan-out")
    page = open_page()
    page.goto(f"{tree.url}/ui/events/{event_id}")
    rows = page.locator(".timeline.lanes li.lane-row")
    expect(rows).to_have_count(3)  # three branches at once; `after` follows in the first lane free
    expect(page.locator(".timeline.lanes .bar")).to_have_count(4)
    boxes = [[row.locator(".bar").nth(n).bounding_box() for n in range(row.locator(".bar").count())]
             for row in rows.all()]
    assert sorted(len(row) for row in boxes) == [1, 1, 2]
    for row in boxes:
        assert all(box["width"] > 20 and box["height"] > 10 for box in row)  # drawn, not collapsed
        for before, after in zip(row, row[1:], strict=False):
            assert before["x"] + before["width"] <= after["x"] + 0.5
    # Bars of different lanes at once are stacked, one lane under the other.
    tops = sorted(row[0]["y"] for row in boxes)
    assert tops[1] - tops[0] >= 10 and tops[2] - tops[1] >= 10
    page.locator('.timeline.lanes .bar[data-instance="after"]').click()
    expect(page.locator("details.step-record[open]").first).to_be_visible()
    shoot(page, "event-lanes")


def test_the_page_of_a_running_event_follows_it_to_completed_without_reloading(tree, open_page):
    tree.services.gate.clear()
    event_id = tree.send("gated", mode="async")
    page = open_page()
    page.goto(f"{tree.url}/ui/events/{event_id}")
    page.evaluate("window.__same_page = true")
    # `first` ends and `held` waits on its service: the page shows `first` done and the event running.
    expect(page.locator(".event-title .badge")).to_have_text("running", timeout=10_000)
    expect(page.locator('.timeline.lanes .bar[data-instance="first"]')).to_have_class("bar bar-green",
                                                                                      timeout=10_000)
    expect(page.locator('.timeline.lanes .bar[data-instance="held"]')).to_have_count(0)  # recorded as it ends
    assert page.locator("#event").get_attribute("data-poll") == "1500"
    shoot(page, "event-live-running")
    tree.services.gate.set()
    expect(page.locator(".event-title .badge")).to_have_text("completed", timeout=10_000)
    expect(page.locator('.timeline.lanes .bar[data-instance="held"]')).to_have_class("bar bar-green")
    expect(page.locator("section.columns pre.code").nth(1)).to_contain_text("EERT")  # the outputs
    assert page.evaluate("window.__same_page") is True
    assert page.locator("#event").get_attribute("data-poll") is None  # ended: no more polling
    requests = []
    page.on("request", lambda request: requests.append(request.url))
    page.wait_for_timeout(2_000)
    assert not [url for url in requests if url.endswith("/live")]

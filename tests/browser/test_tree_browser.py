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


VALID = """name: typed-flow
inputs: [{name: message, type: string}]
outputs: [{name: message, type: string}]
steps:
  - {id: shout, call: slow}
  - id: both
    parallel:
      one: [{id: left, call: slow, in: {message: message}, out: {message: left}}]
      two: [{id: right, call: slow, out: {message: right}}]
"""


def open_editor(tree, open_page, **context):
    page = open_page(**context)
    checks = []
    page.on("request", lambda request: checks.append(request) if "/workflows/check" in request.url else None)
    page.goto(f"{tree.url}/ui/editor")
    expect(page.locator("#check-status")).to_have_attribute("data-state", "ok")  # the starter checks
    return page, checks


def test_typing_a_valid_definition_draws_it(tree, open_page):
    page, checks = open_editor(tree, open_page)
    area = page.locator("#definition")
    area.fill("")
    area.press_sequentially(VALID[:40], delay=10)
    area.fill(VALID)  # the rest at once, as a paste
    expect(page.locator("#check-status")).to_have_attribute("data-state", "ok")
    drawing = page.locator("#check-graph svg")
    expect(drawing.locator('.parallel[data-node="both"]')).to_be_visible()
    expect(drawing.locator('[data-branch="one"]')).to_be_visible()
    expect(drawing.get_by_text("left: slow", exact=True)).to_be_visible()
    assert page.locator("#check-errors li").count() == 0
    # Debounced: 40 keystrokes and a paste made far fewer checks than keystrokes.
    assert len(checks) <= 10, [request.url for request in checks]
    assert checks[-1].url.endswith("/workflows/check?graph=svg")
    assert checks[-1].headers["content-type"] == "application/yaml"
    shoot(page, "editor-valid")


def test_a_mistyped_definition_shows_the_error_naming_its_path(tree, open_page):
    page, _ = open_editor(tree, open_page)
    page.locator("#definition").fill(VALID.replace("in: {message: message}", "in: {message: mesage}"))
    expect(page.locator("#check-status")).to_have_attribute("data-state", "error")
    error = page.locator("#check-errors li").first
    expect(error.locator("code.path")).to_have_text("left.in.message")
    expect(error).to_contain_text("no field 'mesage'")
    expect(error).to_contain_text("(step left)")
    expect(page.locator("#check-graph svg")).to_have_count(0)
    shoot(page, "editor-error")
    # JSON is read as JSON: a schema error names its field.
    page.locator("#definition").fill('{"name": "typed-flow", "steps": []}')
    expect(page.locator("#check-errors")).to_contain_text("inputs Missing data for required field.")


def test_register_registers_the_definition(tree, open_page):
    page, _ = open_editor(tree, open_page)
    page.locator("#definition").fill(VALID.replace("typed-flow", "editor-made"))
    expect(page.locator("#check-status")).to_have_attribute("data-state", "ok")
    page.get_by_role("button", name="Register").click()
    expect(page.locator("#register-answer")).to_contain_text("Registered editor-made, version 1.")
    registered = tree.app.test_client().get("/workflows/editor-made")
    assert registered.status_code == 200 and registered.get_json()["steps"][0] == {"id": "shout", "call": "slow"}
    page.get_by_role("button", name="Register").click()
    expect(page.locator("#register-answer")).to_contain_text("Replaced: a new version of editor-made, version 2.")
    page.get_by_role("link", name="Open editor-made").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("editor-made")
    # On the workflow's page, the editor holds its definition, checks it once opened, and registers.
    page.get_by_text("Edit the definition").click()
    expect(page.locator("#check-status")).to_have_attribute("data-state", "ok")
    assert "name: editor-made" in page.locator("#definition").input_value()
    expect(page.locator("#check-graph svg .parallel[data-node='both']")).to_be_visible()
    page.get_by_role("button", name="Register").click()
    expect(page.locator("#register-answer")).to_contain_text("version 3.")


ADMIN_KEY = "admin-key-0123456789abcdef"
READ_KEY = "read-key-0123456789abcdef"


@pytest.fixture(scope="module")
def secured():
    """The same services behind a Machinery with API keys: the UI's own calls must pass as its pages do."""
    services = Services()
    app = create_app({"MONGO_URI": "mongomock://localhost/machinery-tree-secured", "EMBEDDED_WORKERS": 1,
                      "POLL_S": 0.05, "API_KEYS": f"{ADMIN_KEY}:admin,{READ_KEY}:read"})
    client = app.test_client()
    client.environ_base["HTTP_AUTHORIZATION"] = f"Bearer {ADMIN_KEY}"
    for name in ("slow", "gate"):
        service = {"name": name, "address": f"{services.server.url.rstrip('/')}/{name}", "inputs": STRING,
                   "outputs": STRING, "timeout_s": 40}
        assert client.post("/services", json=service).status_code == 201
    assert client.post("/workflows", json=GATED).status_code == 201
    server = ServerThread(app).start()
    try:
        yield Tree(app, server, services), client
    finally:
        services.gate.set()
        server.stop()
        app.extensions["machinery"].close(grace_s=2)
        services.server.stop()


def keyed_page(browser, key):
    context = browser.new_context(viewport={"width": 1280, "height": 900},
                                  http_credentials={"username": "ops", "password": key})
    context.set_default_timeout(10_000)
    return context, context.new_page()


def test_with_api_keys_the_editor_checks_and_registers_with_the_key_given_to_the_ui(secured, browser):
    tree, _ = secured
    context, page = keyed_page(browser, ADMIN_KEY)
    try:
        page.goto(f"{tree.url}/ui/editor")
        page.locator("#definition").fill(VALID.replace("typed-flow", "keyed-flow"))
        expect(page.locator("#check-status")).to_have_attribute("data-state", "ok")
        expect(page.locator("#check-graph svg .parallel[data-node='both']")).to_be_visible()
        page.get_by_role("button", name="Register").click()
        expect(page.locator("#register-answer")).to_contain_text("Registered keyed-flow, version 1.")
    finally:
        context.close()
    context, page = keyed_page(browser, READ_KEY)
    try:
        page.goto(f"{tree.url}/ui/editor")
        expect(page.locator("#check-status")).to_have_attribute("data-state", "error")
        expect(page.locator("#check-status")).to_contain_text("Not allowed: this API key lacks the 'admin' right")
    finally:
        context.close()


def test_with_api_keys_the_live_page_follows_the_event_with_a_read_key(secured, browser):
    tree, client = secured
    tree.services.gate.clear()
    sent = client.post("/e/gated?mode=async", json={"data": {"message": "keyed"}})
    assert sent.status_code == 202, sent.get_json()
    context, page = keyed_page(browser, READ_KEY)
    try:
        page.goto(f"{tree.url}/ui/events/{sent.get_json()['event_id']}")
        expect(page.locator(".event-title .badge")).to_have_text("running", timeout=10_000)
        tree.services.gate.set()
        expect(page.locator(".event-title .badge")).to_have_text("completed", timeout=10_000)
    finally:
        context.close()


@pytest.mark.parametrize("width", (1280, 390))
def test_the_tree_pages_fit_the_width(tree, open_page, width):
    event_id = tree.send("fan-out")
    page = open_page(width=width)
    for name, path in {"editor": "/ui/editor", "event-tree": f"/ui/events/{event_id}",
                       "workflow-tree": "/ui/workflows/fan-out"}.items():
        page.goto(tree.url + path)
        if name == "workflow-tree":
            page.get_by_text("Edit the definition").click()
        expect(page.locator("#check-status, .timeline.lanes").first).to_be_visible()
        if name != "event-tree":
            expect(page.locator("#check-status")).to_have_attribute("data-state", "ok")
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} is {overflow}px wider than {width}px"
        shoot(page, f"{name}-{width}")

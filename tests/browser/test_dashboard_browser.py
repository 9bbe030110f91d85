"""The dashboard at /ui/ in headless Chromium: its charts are drawn and its figures are the events sent."""

from __future__ import annotations

import pytest

from machinery.app import create_app
from machinery.serving import ServerThread, free_port
from tests.browser.conftest import shoot
from tests.conftest import EXAMPLE_TEXT, register_examples

pytestmark = pytest.mark.browser

SENT_OK, SENT_FAILING = 5, 2


@pytest.fixture(scope="module")
def served(example_services):
    app = create_app({"MONGO_URI": f"mongomock://localhost/dashboard-{free_port()}", "EMBEDDED_WORKERS": 1,
                      "POLL_S": 0.05})
    client = app.test_client()
    register_examples(client, example_services)
    gone = {"name": "gone", "address": f"http://127.0.0.1:{free_port()}/", "retry": {"max_attempts": 1},
            "inputs": [{"name": "message", "type": "string"}], "outputs": [{"name": "message", "type": "string"}]}
    assert client.post("/services", json=gone).status_code == 201
    flow = {"name": "gone-flow", "services": ["gone"], "inputs": [{"name": "message", "type": "string"}],
            "outputs": [{"name": "message", "type": "string"}]}
    assert client.post("/workflows", json=flow).status_code == 201
    for _ in range(SENT_OK):
        assert client.post("/e/process-text", json={"data": {"message": EXAMPLE_TEXT}}).status_code == 201
    for _ in range(SENT_FAILING):
        assert client.post("/e/gone-flow", json={"data": {"message": "x"}}).status_code == 502
    server = ServerThread(app).start()
    try:
        yield server.url.rstrip("/")
    finally:
        server.stop()
        app.extensions["machinery"].close(grace_s=2)


@pytest.mark.parametrize("width", (1280, 390))
def test_the_dashboard_draws_its_charts_with_the_figures_of_the_events_sent(served, open_page, width):
    from playwright.sync_api import expect

    page = open_page(width)
    page.goto(f"{served}/ui/")
    expect(page.get_by_role("heading", level=1)).to_have_text("Dashboard")
    ok = page.locator('tr[data-workflow="process-text"]')
    expect(ok.locator('[data-figure="hour-events"]')).to_have_text(str(SENT_OK))
    expect(ok.locator('[data-figure="day-completed"]')).to_have_text(str(SENT_OK))
    expect(ok.locator('[data-figure="hour-success"]')).to_have_text("100.0 %")
    failing = page.locator('tr[data-workflow="gone-flow"]')
    expect(failing.locator('[data-figure="day-failed"]')).to_have_text(str(SENT_FAILING))
    charts = ok.locator("svg.chart")
    expect(charts).to_have_count(3)
    for index in range(3):
        box = charts.nth(index).bounding_box()
        assert box is not None and box["width"] >= 160 and box["height"] >= 40
    # The bar of the events sent is drawn, taller than the empty ones around it: the last one, or the one
    # before it when the page was drawn just after the bucket the events fell in had ended.
    bars = charts.nth(0).locator("rect.bar")
    heights = [float(bars.nth(k).get_attribute("height")) for k in range(bars.count())]
    assert len(heights) == 12 and max(heights[-2:]) > 10 and min(heights) == 1.0
    expect(charts.nth(1).locator("rect.bar.ok")).not_to_have_count(0)
    expect(charts.nth(1).locator("rect.bar.bad")).to_have_count(0)
    expect(failing.locator("svg.chart").nth(1).locator("rect.bar.bad")).not_to_have_count(0)
    expect(charts.nth(2).locator("polyline, circle")).not_to_have_count(0)
    expect(page.locator("#failing")).to_contain_text("gone-flow")
    expect(page.locator("#failing")).to_contain_text("gone")
    expect(page.locator("#slowest")).to_contain_text("process-text")
    expect(page.locator("#dashboard-services")).to_contain_text("upper")
    shoot(page, f"dashboard-{width}")
    page.get_by_role("link", name="Workflows", exact=True).click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("Workflows")


# Each step table's section: how wide its content is, how wide the section is, and where it starts and ends.
SECTION_BOXES = """() => ['slowest', 'failing'].map(id => {
  const section = document.getElementById(id).closest('section');
  const box = section.getBoundingClientRect();
  return {id, content: section.scrollWidth, width: section.clientWidth, left: box.left, right: box.right};
})"""


@pytest.mark.parametrize("width", (1280, 390))
def test_the_step_tables_stay_within_their_own_cards(served, open_page, width):
    page = open_page(width)
    page.goto(f"{served}/ui/")
    slowest, failing = page.evaluate(SECTION_BOXES)
    for section in (slowest, failing):
        assert section["content"] <= section["width"], f"#{section['id']} runs out of its card at {width}px"
    assert slowest["right"] <= failing["left"] or failing["right"] <= slowest["left"] or \
        slowest["left"] == failing["left"], "the two cards overlap"

"""The /ui pages in headless Chromium: content, click-through, retry with and without JavaScript, two widths."""

from __future__ import annotations

import re

import pytest

from tests.browser.conftest import HOSTILE, shoot

pytestmark = pytest.mark.browser

WIDTHS = (1280, 390)


def expect(target):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def test_the_workflows_list(live, open_page):
    page = open_page()
    page.goto(f"{live.url}/ui/workflows")
    expect(page.get_by_role("link", name="process-text")).to_be_visible()
    expect(page.get_by_role("link", name="broken-flow")).to_be_visible()
    shoot(page, "workflows")


def test_workflow_page_draws_the_steps_and_renames(live, open_page):
    page = open_page()
    page.goto(f"{live.url}/ui/workflows")
    page.get_by_role("link", name="process-text").click()
    expect(page.get_by_role("heading", level=1)).to_contain_text("process-text")
    graph = page.locator("figure.graph svg")
    expect(graph).to_be_visible()
    for text in ("0 \u00b7 upper", "1 \u00b7 reverse", "2 \u00b7 space-counter", "message \u2192 space_count"):
        expect(graph.get_by_text(text, exact=True)).to_be_visible()
    box = graph.bounding_box()
    assert box["width"] > 250 and box["height"] > 400  # drawn, not collapsed
    shoot(page, "workflow")


def test_services_page_shows_a_hostile_description_as_text(live, open_page):
    page = open_page()
    page.goto(f"{live.url}/ui/services")
    card = page.locator("#service-broken")
    expect(card.locator(".description")).to_have_text(HOSTILE)
    expect(page.locator("#service-upper")).to_contain_text("process-text")
    assert page.evaluate("window.__pwned") is None
    assert page.locator("main script, main img").count() == 0
    shoot(page, "services")


def test_click_through_from_the_list_to_a_completed_event(live, open_page):
    page = open_page()
    page.goto(f"{live.url}/ui/workflows")
    page.get_by_role("link", name="process-text").click()
    page.get_by_role("link", name=live.completed).first.click()
    assert page.url == f"{live.url}/ui/events/{live.completed}"
    expect(page.locator("h1 .badge")).to_have_text("completed")
    bars = page.locator(".timeline .bar")
    expect(bars).to_have_count(3)
    for index in range(3):
        assert bars.nth(index).bounding_box()["width"] >= 2
    expect(page.get_by_text('"space_count": 7').first).to_be_visible()
    expect(page.get_by_role("button", name=re.compile("Retry"))).to_have_count(0)
    shoot(page, "event-completed")


def test_events_are_filtered_by_status(live, open_page):
    page = open_page()
    page.goto(f"{live.url}/ui/events")
    page.get_by_label("Status").select_option("failed")  # submits itself with JavaScript on
    page.wait_for_url(re.compile(r"status=failed"))
    rows = page.locator("table.list tbody tr")
    expect(rows.first).to_be_visible()
    assert all("failed" in text for text in rows.locator(".badge").all_inner_texts())
    expect(page.get_by_role("link", name=live.completed)).to_have_count(0)
    shoot(page, "events-failed")


def test_retry_a_failed_event_and_watch_it_refresh(live, open_page):
    event_id = live.fail_one()
    page = open_page()
    page.goto(f"{live.url}/ui/events?status=failed")
    page.get_by_role("link", name=event_id).click()
    expect(page.locator("h1 .badge")).to_have_text("failed")
    expect(page.locator(".failure .notice-error")).to_contain_text("Step 1 (broken) failed")
    page.get_by_role("button", name="Retry from step 1").click()
    # The worker runs it again (the service is still down); the page reloads itself until it ends.
    expect(page.locator(".timeline .lane")).to_have_count(3, timeout=15_000)
    expect(page.locator("h1 .badge")).to_have_text("failed", timeout=15_000)
    expect(page.locator(".facts")).to_contain_text("(1 retry)")
    assert live.event(event_id)["run"] == 1
    shoot(page, "event-retried")


def test_retry_works_without_javascript(live, open_page):
    event_id = live.fail_one()
    page = open_page(javascript=False)
    page.goto(f"{live.url}/ui/events/{event_id}")
    page.get_by_role("button", name="Retry from step 1").click()
    page.wait_for_url(f"{live.url}/ui/events/{event_id}")
    # The <noscript> meta refresh brings the page up to date once the worker is done.
    expect(page.locator(".timeline .lane")).to_have_count(3, timeout=15_000)
    assert live.event(event_id)["run"] == 1


def test_failed_event_shows_hostile_data_as_text(live, open_page):
    page = open_page()
    page.goto(f"{live.url}/ui/events/{live.failed}")
    expect(page.locator("h1 .badge")).to_have_text("failed")
    expect(page.get_by_text(HOSTILE.replace('"', '\\"'), exact=False).first).to_be_attached()
    assert page.evaluate("window.__pwned") is None
    shoot(page, "event-failed")


@pytest.mark.parametrize("width", WIDTHS)
def test_pages_fit_the_width(live, open_page, width):
    page = open_page(width=width)
    pages = {"workflows": "/ui/workflows", "workflow": "/ui/workflows/process-text", "services": "/ui/services",
             "events": "/ui/events", "event": f"/ui/events/{live.completed}",
             "event-failed": f"/ui/events/{live.failed}"}
    for name, path in pages.items():
        page.goto(live.url + path)
        overflow = page.evaluate("document.documentElement.scrollWidth - window.innerWidth")
        assert overflow <= 0, f"{path} is {overflow}px wider than {width}px"
        shoot(page, f"{name}-{width}")


def test_pause_a_workflow_cancel_its_held_event_and_resume(live, open_page):
    client = live.app.test_client()
    assert client.post("/workflows", json={
        "name": "ui-pausable", "services": ["upper"], "inputs": [{"name": "message", "type": "string"}],
        "outputs": [{"name": "message", "type": "string"}]}).status_code in (200, 201)
    page = open_page()
    page.goto(f"{live.url}/ui/workflows/ui-pausable")
    page.get_by_role("button", name="Pause").click()
    expect(page.locator(".facts")).to_contain_text("paused by anonymous")
    sent = client.post("/e/ui-pausable", json={"message": "held"}).get_json()
    assert sent["status"] == "pending"

    page.goto(f"{live.url}/ui/events/{sent['event_id']}")
    expect(page.locator(".live")).to_contain_text("held while its workflow is paused")
    page.get_by_role("button", name="Cancel").click()
    expect(page.locator("h1 .badge")).to_have_text("cancelled")
    expect(page.locator(".failure")).to_contain_text("Cancelled by anonymous")
    shoot(page, "event-cancelled")

    page.goto(f"{live.url}/ui/workflows/ui-pausable")
    page.get_by_role("button", name="Resume").click()
    expect(page.locator(".facts")).to_contain_text("running")
    assert live.event(sent["event_id"])["status"] == "cancelled"


def test_every_page_loads_without_a_console_error_or_a_failed_request(live, open_page):
    # GIVEN each page of the UI, the editor and an event's page among them
    pages = ["/ui/", "/ui/workflows", "/ui/workflows/process-text", "/ui/editor", "/ui/services",
             "/ui/schedules", "/ui/events", "/ui/bulk", f"/ui/events/{live.completed}", f"/ui/events/{live.failed}"]
    page = open_page()
    problems: list[str] = []
    page.on("console", lambda message: problems.append(f"console {message.type}: {message.text}")
            if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(f"script error: {error}"))
    page.on("requestfailed", lambda request: problems.append(f"request failed: {request.url}"))
    page.on("response", lambda response: problems.append(f"{response.status}: {response.url}")
            if response.status >= 400 else None)
    for path in pages:
        # WHEN a browser opens it, with the icon, the style and the script it links to
        page.goto(live.url + path)
        page.wait_for_load_state("networkidle")
        # THEN nothing it asked for is missing or refused, and no script fails (a 404 icon was one)
        assert not problems, f"{path}: {problems}"
    icon = page.evaluate("document.querySelector('link[rel=icon]').href")
    assert page.request.get(icon).headers["content-type"].startswith("image/svg+xml")

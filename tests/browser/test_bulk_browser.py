"""Bulk retry from the event list in Chromium: filter, count, act on all matching, watch the job page."""

from __future__ import annotations

import pytest

from tests.browser.conftest import shoot

pytestmark = pytest.mark.browser


def expect(target):
    from playwright.sync_api import expect as playwright_expect

    return playwright_expect(target)


def test_filter_count_retry_all_and_watch_the_job_complete(live, open_page):
    # GIVEN three more failed events of broken-flow (four in all)
    for _ in range(3):
        live.fail_one()
    page = open_page()
    page.goto(f"{live.url}/ui/events?workflow=broken-flow&status=failed")
    # WHEN the list's bulk form counts, then retries all matching
    page.get_by_label("Action").select_option("retry")
    page.get_by_role("button", name="Dry run: count").click()
    expect(page.locator(".bulk-count")).to_have_text("4 match; retry applies to 4 (failed)")
    page.get_by_role("button", name="Retry all 4").click()
    # THEN the job's page follows it to the end by itself
    expect(page.locator("h1")).to_contain_text("Retry")
    expect(page.locator("h1 .badge")).to_have_text("completed", timeout=15_000)
    expect(page.locator('[data-field="done"]')).to_have_text("4")
    expect(page.locator('[data-field="skipped"]')).to_have_text("0")
    shoot(page, "bulk-job")

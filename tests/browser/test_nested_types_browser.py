"""A workflow with a nested-typed REST service in headless Chromium: its call shown, a collapsed type unfolded."""

from __future__ import annotations

import pytest

from machinery.app import create_app
from machinery.serving import ServerThread
from tests.api.test_ui import ORDERS, ORDERS_FLOW
from tests.browser.conftest import shoot

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def rest_live():
    app = create_app({"MONGO_URI": "mongomock://localhost/machinery-browser-rest", "EMBEDDED_WORKERS": 0})
    client = app.test_client()
    assert client.post("/services", json=ORDERS).status_code == 201
    assert client.post("/workflows", json=ORDERS_FLOW).status_code == 201
    server = ServerThread(app).start()
    try:
        yield server.url.rstrip("/")
    finally:
        server.stop()
        app.extensions["machinery"].close(grace_s=2)


@pytest.mark.parametrize("javascript", [True, False])
def test_a_collapsed_nested_type_unfolds_on_click(rest_live, open_page, javascript):
    page = open_page(javascript=javascript)
    page.goto(f"{rest_live}/ui/workflows/orders-flow")
    call = page.locator("td.call").first
    assert call.inner_text() == "GET /orders/{order_id}"
    tree = page.locator("table.steps-table details.type-tree").first
    item_field = tree.locator("code", has_text="sku").first
    assert tree.get_attribute("open") is None
    assert not item_field.is_visible()
    tree.locator("summary").first.click()
    assert tree.get_attribute("open") is not None
    assert item_field.is_visible()
    inner = tree.locator("details.type-tree").first  # the optional product object, one level down
    inner.locator("summary").first.click()
    assert inner.locator("code", has_text="title").is_visible()
    shoot(page, f"nested-type-unfolded{'' if javascript else '-no-js'}")


def test_services_page_shows_the_request_and_where_outputs_come_from(rest_live, open_page):
    page = open_page()
    page.goto(f"{rest_live}/ui/services")
    card = page.locator("#service-orders")
    assert "GET /orders/{order_id}" in card.locator(".call").inner_text()
    assert "body.order.lines" in card.inner_text()
    card.locator("details.type-tree summary").first.click()
    assert card.locator("details.type-tree[open] code", has_text="qty").first.is_visible()
    shoot(page, "services-rest")

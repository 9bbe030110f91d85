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

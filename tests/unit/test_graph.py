"""The drawings of a plan: SVG well-formed, Mermaid and DOT complete, user text escaped everywhere."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET

import pytest

from machinery import graph
from machinery.exceptions import InvalidData
from machinery.language import dataflow
from tests.conftest import definition

SVG_NS = "{http://www.w3.org/2000/svg}"
HOSTILE = '<script>alert("x")</script> & "quotes" \\ # | ]] --> \x01'


def example_plan() -> dict:
    services = {name: definition(f"service-{name}") for name in ("upper", "reverse", "space-counter")}
    return dataflow.plan(definition("workflow-process-text"), services)


def renamed_plan() -> dict:
    """A plan with an input rename and an output rename at the same step, and a key read two steps later."""
    services = {
        "split": {"name": "split", "address": "http://split.local/",
                  "inputs": [{"name": "text", "type": "string"}],
                  "outputs": [{"name": "words", "type": "array"}, {"name": "count", "type": "int"}]},
        "join": {"name": "join", "address": "http://join.local/",
                 "inputs": [{"name": "parts", "type": "array"}],
                 "outputs": [{"name": "text", "type": "string"}]},
    }
    workflow = {
        "name": "split-join", "services": ["split", "join"],
        "inputs": [{"name": "sentence", "type": "string"}],
        "outputs": [{"name": "result", "type": "string"}, {"name": "count", "type": "int"}],
        "operations": [{"service": "split", "inputs": {"text": "sentence"}},
                       {"service": "join", "inputs": {"parts": "words"}, "outputs": {"text": "result"}}],
    }
    return dataflow.plan(workflow, services)


def hostile_plan() -> dict:
    """Field names, types' descriptions and addresses carry markup and syntax; service names cannot."""
    services = {"evil": {"name": "evil", "address": f"http://evil.local/?q={HOSTILE}",
                         "inputs": [{"name": HOSTILE, "type": "string", "description": HOSTILE}],
                         "outputs": [{"name": "out", "type": "string", "description": HOSTILE}]}}
    workflow = {"name": "evil-flow", "services": ["evil"],
                "inputs": [{"name": HOSTILE, "type": "string", "description": HOSTILE}],
                "outputs": [{"name": "out", "type": "string"}]}
    return dataflow.plan(workflow, services)


def visible(element) -> str:
    """The text an element shows: its text and its children's, leaving out <title> tooltips."""
    parts = [element.text or ""]
    for child in element:
        if child.tag != f"{SVG_NS}title":
            parts.append(visible(child))
        parts.append(child.tail or "")
    return "".join(parts)


def svg_texts(document: str) -> list[str]:
    root = ET.fromstring(document)
    return [visible(element) for element in root.iter(f"{SVG_NS}text")]


def test_model_links_each_reader_to_the_step_that_wrote_its_key():
    # GIVEN process-text, whose final message comes from reverse while space-counter's is renamed
    nodes, edges = graph.model(example_plan())
    # THEN the boxes are the inputs, the three steps and the outputs, and the edges follow the context
    assert [node.id for node in nodes] == ["inputs", "step0", "step1", "step2", "outputs"]
    assert {(e.source, e.target): e.labels for e in edges} == {
        ("inputs", "step0"): ["message"],
        ("step0", "step1"): ["message"],
        ("step1", "step2"): ["message"],
        ("step1", "outputs"): ["message"],
        ("step2", "outputs"): ["message \u2192 space_count"],
    }


def test_model_shows_run_order_where_no_data_passes():
    # GIVEN a step that reads only the workflow's inputs after a step whose outputs nobody reads
    services = {"a": {"name": "a", "address": "http://a.local/", "inputs": [{"name": "x", "type": "int"}],
                      "outputs": [{"name": "y", "type": "int"}]},
                "b": {"name": "b", "address": "http://b.local/", "inputs": [{"name": "x", "type": "int"}],
                      "outputs": [{"name": "z", "type": "int"}]}}
    plan = dataflow.plan({"name": "w", "services": ["a", "b"], "inputs": [{"name": "x", "type": "int"}],
                          "outputs": [{"name": "z", "type": "int"}]}, services)
    _, edges = graph.model(plan)
    # THEN a from-a-to-b edge without labels keeps the order visible
    order = [e for e in edges if (e.source, e.target) == ("step0", "step1")]
    assert len(order) == 1 and order[0].labels == []
    assert {(e.source, e.target) for e in edges if e.labels} == {("inputs", "step0"), ("inputs", "step1"),
                                                                  ("step1", "outputs")}


def test_svg_is_well_formed_and_shows_every_step_field_and_flow():
    document = graph.svg(example_plan(), "process-text")
    root = ET.fromstring(document)
    assert root.tag == f"{SVG_NS}svg"
    texts = svg_texts(document)
    for title in ("0 \u00b7 upper", "1 \u00b7 reverse", "2 \u00b7 space-counter", "workflow inputs",
                  "workflow outputs"):
        assert title in texts
    assert "out message: int \u2192 space_count" in texts
    assert "message \u2192 space_count" in texts
    assert "out space_count: int" in texts
    assert len([g for g in root.iter(f"{SVG_NS}g") if g.get("class") == "edge"]) == 5


def test_svg_shows_input_and_output_renames():
    texts = svg_texts(graph.svg(renamed_plan(), "split-join"))
    assert "in  text: string \u2190 sentence" in texts
    assert "in  parts: array \u2190 words" in texts
    assert "out text: string \u2192 result" in texts
    # The edge labels name the key, and the field names when they differ from it.
    assert "sentence \u2192 text" in texts
    assert "words \u2192 parts" in texts
    assert "text \u2192 result" in texts
    assert "count" in texts  # split's count reaches the outputs, past join, in a lane of its own


def test_svg_links_step_titles_when_asked():
    root = ET.fromstring(graph.svg(example_plan(), "process-text", link=lambda name: f"/ui/services#{name}"))
    links = [a.get("href") for a in root.iter(f"{SVG_NS}a")]
    assert links == ["/ui/services#upper", "/ui/services#reverse", "/ui/services#space-counter"]


def test_svg_escapes_user_text_and_drops_characters_xml_forbids():
    document = graph.svg(hostile_plan(), HOSTILE)
    root = ET.fromstring(document)  # would raise on a raw '<', '&' or \x01
    assert "<script" not in document
    assert not list(root.iter(f"{SVG_NS}script"))
    assert "\x01" not in document
    titles = ["".join(t.itertext()) for t in root.iter(f"{SVG_NS}title")]
    assert HOSTILE.replace("\x01", "\ufffd") in titles  # the description, whole, as a tooltip
    assert root.get("aria-label") == "Workflow " + HOSTILE.replace("\x01", "\ufffd")


def test_svg_shortens_long_names_but_keeps_the_box_around_them():
    services = {"s": {"name": "s", "address": "http://s.local/", "inputs": [{"name": "k" * 100, "type": "string"}],
                      "outputs": []}}
    plan = dataflow.plan({"name": "w", "services": ["s"], "inputs": [{"name": "k" * 100, "type": "string"}],
                          "outputs": []}, services)
    root = ET.fromstring(graph.svg(plan))
    width = float(root.get("width"))
    assert any(text.endswith("\u2026") for text in svg_texts(graph.svg(plan)))
    assert width < 700


def test_mermaid_has_every_node_and_edge_label():
    text = graph.mermaid(example_plan())
    assert text.startswith("flowchart TD\n")
    for node in ("inputs", "step0", "step1", "step2", "outputs"):
        assert re.search(rf"^    {node}[\[(]", text, re.M), node
    for edge in ('inputs -->|"message"| step0', 'step0 -->|"message"| step1', 'step1 -->|"message"| step2',
                 'step1 -->|"message"| outputs', 'step2 -->|"message \u2192 space_count"| outputs'):
        assert edge in text
    assert "0 \u00b7 upper" in text and "2 \u00b7 space-counter" in text


def test_mermaid_encodes_markup_and_syntax_characters():
    text = graph.mermaid(hostile_plan())
    for raw in ("<script", '"x"', "&", "]]", "-->|\"<", "\x01"):
        assert raw not in text.replace('-->|"', "")
    assert "#60;script#62;" in text
    assert "#34;quotes#34;" in text
    # Every label stays one quoted string: quotes only where the syntax puts them.
    for line in text.splitlines()[1:]:
        assert line.count('"') in (0, 2), line


def test_dot_has_every_node_and_edge_label():
    text = graph.dot(renamed_plan(), "split-join")
    assert text.startswith('digraph "split-join" {')
    for node in ("inputs", "step0", "step1", "outputs"):
        assert re.search(rf"^    {node} \[label=", text, re.M), node
    assert 'inputs -> step0 [label="sentence \u2192 text", fontcolor="#b45309"];' in text
    assert 'step0 -> step1 [label="words \u2192 parts", fontcolor="#b45309"];' in text
    assert 'step1 -> outputs [label="text \u2192 result", fontcolor="#b45309"];' in text
    assert 'step0 -> outputs [label="count"];' in text
    assert text.rstrip().endswith("}")


def test_dot_escapes_quotes_and_backslashes():
    text = graph.dot(hostile_plan(), HOSTILE)
    assert '\\"quotes\\"' in text
    assert " \\\\ " in text
    assert "\x01" not in text
    # No quoted string ends early: every quote left is an escaped one or a delimiter around a whole value.
    unescaped = re.sub(r'\\.', "", text)
    for line in unescaped.splitlines():
        assert line.count('"') % 2 == 0, line


@pytest.mark.parametrize("fmt, start", [("svg", "<svg"), ("mermaid", "flowchart"), ("dot", "digraph")])
def test_render_picks_the_format(fmt, start):
    assert graph.render(example_plan(), fmt, "process-text").startswith(start)


def test_render_refuses_an_unknown_format():
    with pytest.raises(InvalidData) as caught:
        graph.render(example_plan(), "png")
    assert caught.value.errors == {"format": ["must be one of svg, mermaid, dot"]}


# -- REST services and nested types ---------------------------------------------------------

LINES = {"type": "array", "items": {"type": "object", "fields": [
    {"name": "sku", "type": "string"}, {"name": "qty", "type": "int"},
    {"name": "note", "type": "string", "required": False}]}}


def rest_plan(path: str = "/orders/{order_id}") -> dict:
    services = {
        "orders": {"name": "orders", "address": "http://orders.local:5000/",
                   "request": {"method": "GET", "path": path},
                   "inputs": [{"name": "order_id", "type": "string"}],
                   "outputs": [{"name": "lines", "type": LINES, "from": "body.order.lines"}]},
        "upper": definition("service-upper"),
    }
    workflow = {"name": "orders-flow", "services": ["orders", "upper"],
                "inputs": [{"name": "order_id", "type": "string"}, {"name": "message", "type": "string"}],
                "outputs": [{"name": "lines", "type": LINES}, {"name": "message", "type": "string"}]}
    return dataflow.plan(workflow, services)


def test_each_step_shows_its_method_and_path_or_a_post_of_its_address():
    nodes, _ = graph.model(rest_plan())
    steps = [node for node in nodes if node.kind == "step"]
    assert steps[0].subtitle == "GET /orders/{order_id}"
    assert steps[1].subtitle == f"POST {definition('service-upper')['address']}"


def test_a_nested_type_is_drawn_in_its_short_form():
    nodes, _ = graph.model(rest_plan())
    row = next(row for row in nodes[1].rows if row.name == "lines")
    assert row.type.startswith("array<object{sku: string")
    assert len(row.type) <= graph.TYPE_LIMIT


def test_svg_of_a_rest_plan_is_well_formed_and_shows_the_call():
    drawing = graph.svg(rest_plan(), "orders-flow")
    root = ET.fromstring(drawing)
    texts = ["".join(element.itertext()) for element in root.iter(f"{SVG_NS}text")]
    assert "GET /orders/{order_id}" in texts
    assert any("lines: array<object{sku" in text for text in texts)


def test_mermaid_of_a_rest_plan_escapes_braces_and_angles_of_paths_and_types():
    text = graph.mermaid(rest_plan())
    node = next(line for line in text.splitlines() if line.strip().startswith("step0["))
    label = node.split('["', 1)[1].rsplit('"]', 1)[0]
    assert "GET /orders/#123;order_id#125;" in label
    assert "array#60;object#123;sku: string" in label
    assert not set('"<>{}') & set(label.replace("<br/>", ""))


def test_dot_of_a_rest_plan_quotes_a_hostile_path():
    text = graph.dot(rest_plan(path='/o/{order_id}/"x"\\'), "orders-flow")
    line = next(line for line in text.splitlines() if line.strip().startswith("step0 "))
    assert 'GET /o/{order_id}/\\"x\\"\\\\' in line
    assert line.count('"') - line.count('\\"') == 4  # the label's and the fill colour's quotes, nothing else

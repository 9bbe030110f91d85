"""The definition editor's server side: POST /workflows/check?graph=, the editor pages, and the Basic challenge
the UI's script gets when API keys are configured."""

from __future__ import annotations

import html
import re
import xml.etree.ElementTree as ET

import pytest
import yaml

from machinery import cli
from tests.conftest import DEFINITIONS, register_examples
from tests.security.conftest import ADMIN_KEY, READ_KEY, basic, close, make_app, snapshot

BASIC = 'Basic realm="machinery", charset="UTF-8"'
TREE = {"name": "drawn", "inputs": [{"name": "message", "type": "string"}],
        "outputs": [{"name": "message", "type": "string"}],
        "steps": [{"id": "loud", "call": "upper"},
                  {"id": "both", "parallel": {"one": [{"id": "mirror", "call": "reverse", "out": {"message": "a"}}],
                                              "two": [{"id": "count", "call": "space-counter",
                                                       "out": {"message": "b"}}]}}]}


@pytest.fixture
def examples(client):
    register_examples(client)
    return client


def test_the_check_answers_the_drawing_in_svg(examples, store):
    before = snapshot(store)
    response = examples.post("/workflows/check?graph=svg", json=TREE)
    assert response.status_code == 200, response.get_json()
    answer = response.get_json()
    assert answer["ok"] is True and answer["plan"]["version"] == 2
    svg = ET.fromstring(answer["graph"])
    assert svg.tag == "{http://www.w3.org/2000/svg}svg" and "workflow-graph tree" in svg.get("class")
    assert 'class="node parallel" data-node="both"' in answer["graph"] and 'data-branch="two"' in answer["graph"]
    assert snapshot(store) == before  # nothing registered


@pytest.mark.parametrize("fmt,start", [("mermaid", "flowchart TD"), ("dot", 'digraph "drawn"')])
def test_the_check_answers_the_drawing_in_the_text_formats(examples, fmt, start):
    answer = examples.post(f"/workflows/check?graph={fmt}", json=TREE).get_json()
    assert answer["graph"].startswith(start)


def test_a_chain_is_drawn_as_its_own_graph(examples):
    chain = {"name": "chain", "services": ["upper", "reverse"], "inputs": [{"name": "message", "type": "string"}],
             "outputs": [{"name": "message", "type": "string"}]}
    answer = examples.post("/workflows/check?graph=svg", json=chain).get_json()
    assert "0 \u00b7 upper" in answer["graph"] and "workflow-graph tree" not in answer["graph"]


def test_without_graph_the_check_answers_no_drawing(examples):
    assert "graph" not in examples.post("/workflows/check", json=TREE).get_json()


def test_an_unknown_graph_format_is_a_422_naming_it(examples, store):
    before = snapshot(store)
    response = examples.post("/workflows/check?graph=png", json=TREE)
    assert response.status_code == 422
    assert response.get_json()["errors"] == {"graph": ["unknown graph format 'png'; use one of svg, mermaid, dot"]}
    assert snapshot(store) == before


def test_a_definition_that_does_not_check_answers_its_errors_not_a_drawing(examples):
    wrong = {**TREE, "steps": [{"id": "loud", "call": "upper", "in": {"message": "mesage"}}]}
    response = examples.post("/workflows/check?graph=svg", json=wrong)
    assert response.status_code == 422
    (error,) = response.get_json()["errors"]
    assert error["step"] == "loud" and error["path"] == "loud.in.message" and "no field 'mesage'" in error["problem"]


def test_the_served_spec_describes_the_graph_parameter(client):
    operation = client.get("/openapi.json").get_json()["paths"]["/workflows/check"]["post"]
    (parameter,) = [p for p in operation["parameters"] if p["name"] == "graph"]
    assert parameter["in"] == "query" and parameter["schema"]["enum"] == ["svg", "mermaid", "dot"]
    answer = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert "$ref" in answer or "graph" in answer.get("properties", {})


def textarea(page: str) -> str:
    return html.unescape(re.search(r'<textarea id="definition"[^>]*>(.*?)</textarea>', page, re.S).group(1))


def test_the_editor_page_starts_from_a_definition_that_checks(examples):
    page = examples.get("/ui/editor")
    assert page.status_code == 200
    text = page.get_data(as_text=True)
    assert 'data-check-url="/workflows/check?graph=svg"' in text and 'data-register-url="/workflows"' in text
    starter = textarea(text)
    response = examples.post("/workflows/check", data=starter, content_type="application/yaml")
    assert response.status_code == 200, response.get_json()


def test_the_workflow_page_edits_the_definition_that_registered_it(examples):
    for _kind, definition, _ in cli.read_definitions([str(DEFINITIONS / "workflow-word-shapes.yaml")]):
        assert examples.post("/workflows", json=definition).status_code == 201
    for name in ("word-shapes", "process-text"):
        stored = examples.get(f"/workflows/{name}").get_json()
        shown = textarea(examples.get(f"/ui/workflows/{name}").get_data(as_text=True))
        again = examples.post("/workflows", data=shown, content_type="application/yaml")
        assert again.status_code == 200, again.get_json()  # a new version of the same workflow
        replaced = again.get_json()
        assert replaced["version"] == stored["version"] + 1
        for key in ("inputs", "outputs", "services", "operations", "steps", "description"):
            assert replaced.get(key) == stored.get(key), key


def test_the_workflow_page_never_shows_an_ingestion_secret(examples):
    flow = {"name": "guarded", "services": ["upper"], "inputs": [{"name": "message", "type": "string"}],
            "outputs": [{"name": "message", "type": "string"}], "ingest_token": "token-0123456789abcdef",
            "ingest_hmac_secret": "hmac-secret-0123456789abcdef"}
    assert examples.post("/workflows", json=flow).status_code == 201
    text = examples.get("/ui/workflows/guarded").get_data(as_text=True)
    assert "token-0123456789abcdef" not in text and "hmac-secret-0123456789abcdef" not in text
    assert "ingest" not in yaml.safe_load(textarea(text))
    assert "This workflow has ingestion secrets, which are not shown" in text


@pytest.fixture
def secured():
    app = make_app(API_KEYS=f"{ADMIN_KEY}:admin,{READ_KEY}:read")
    admin = app.test_client()
    admin.environ_base["HTTP_AUTHORIZATION"] = basic(ADMIN_KEY)["Authorization"]
    register_examples(admin)
    yield app
    close(app)


def test_the_uis_script_is_offered_basic_so_the_browser_answers_with_the_key(secured):
    client = secured.test_client()
    from_ui = client.post("/workflows/check?graph=svg", json=TREE, headers={"X-Machinery-UI": "1"})
    assert from_ui.status_code == 401 and BASIC in from_ui.headers.getlist("WWW-Authenticate")
    elsewhere = client.post("/workflows/check?graph=svg", json=TREE)
    assert elsewhere.status_code == 401 and elsewhere.headers.getlist("WWW-Authenticate") == [
        'Bearer realm="machinery"']
    read = client.get("/workflows")  # a link from the UI to a JSON page
    assert read.status_code == 401 and BASIC in read.headers.getlist("WWW-Authenticate")
    checked = client.post("/workflows/check?graph=svg", json=TREE,
                          headers={"X-Machinery-UI": "1", **basic(ADMIN_KEY)})
    assert checked.status_code == 200 and checked.get_json()["graph"].startswith("<svg")
    reader = client.post("/workflows/check", json=TREE, headers={"X-Machinery-UI": "1", **basic(READ_KEY)})
    assert reader.status_code == 403 and "lacks the 'admin' right" in reader.get_json()["message"]

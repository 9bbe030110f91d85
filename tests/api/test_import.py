"""POST /services/import: documents in JSON and YAML or by URL, the report, dry runs, and every refusal."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from flask import Flask, Response

from machinery.api.body import MAX_DEPTH
from machinery.serving import ServerThread
from tests.conftest import definition

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "openapi"
PETSTORE_YAML = (FIXTURES / "petstore-expanded.yaml").read_bytes()
PETSTORE = yaml.safe_load(PETSTORE_YAML)
NAMES = ["pets-findPets", "pets-addPet", "pets-find-pet-by-id", "pets-deletePet"]


def services(client) -> list[dict]:
    return client.get("/services?page_size=100").get_json()["items"]


def import_petstore(client, query="prefix=pets-&base_url=http://127.0.0.1:9/api", **kwargs):
    return client.post(f"/services/import?{query}", data=PETSTORE_YAML, content_type="application/yaml", **kwargs)


@pytest.fixture
def document_server():
    """Serves what a test puts in app.config["routes"]: path -> (status, body, headers)."""
    app = Flask("documents")
    app.config["routes"] = {}

    @app.get("/<path:path>")
    def serve(path):
        status, body, headers = app.config["routes"].get(f"/{path}", (404, b"no", {}))
        return Response(body, status=status, headers=headers)

    server = ServerThread(app).start()
    yield server.url.rstrip("/"), app.config["routes"]
    server.stop()


def test_a_yaml_document_gives_one_service_per_operation(client):
    response = import_petstore(client)
    assert response.status_code == 200, response.get_json()
    report = response.get_json()
    assert [(item["name"], item["outcome"]) for item in report["services"]] == [(name, "created") for name in NAMES]
    assert report["counts"] == {"created": 4} and report["dry_run"] is False
    assert report["title"] == "Swagger Petstore" and report["openapi"] == "3.0.0"
    stored = client.get("/services/pets-find-pet-by-id").get_json()
    assert stored["address"] == "http://127.0.0.1:9/api"
    assert stored["request"]["method"] == "GET" and stored["request"]["path"] == "/pets/{id}"


def test_a_json_document_imports_the_same(client):
    response = client.post("/services/import?base_url=http://127.0.0.1:9/api", json=PETSTORE)
    assert response.status_code == 200
    assert [item["name"] for item in response.get_json()["services"]] == [name[len("pets-"):] for name in NAMES]


def test_a_second_import_replaces_what_the_first_created(client):
    import_petstore(client)
    report = import_petstore(client).get_json()
    assert {item["outcome"] for item in report["services"]} == {"replaced"}
    assert len(services(client)) == 4


def test_a_dry_run_reports_and_stores_nothing(client):
    report = import_petstore(client, "prefix=pets-&base_url=http://127.0.0.1:9/api&dry_run=true").get_json()
    assert report["dry_run"] is True and report["counts"] == {"would create": 4}
    assert report["services"][1]["service"]["request"]["body"] == ["name", "tag"]
    assert services(client) == []


def test_only_imports_the_operations_named(client):
    report = import_petstore(client, "base_url=http://127.0.0.1:9/api&only=addPet,deletePet").get_json()
    assert [item["name"] for item in report["services"]] == ["addPet", "deletePet"]
    assert sorted(service["name"] for service in services(client)) == ["addPet", "deletePet"]


def test_options_may_come_in_the_body_beside_the_document(client):
    body = {"document": PETSTORE, "prefix": "b-", "base_url": "http://127.0.0.1:9/api", "only": ["findPets"]}
    report = client.post("/services/import", json=body).get_json()
    assert [item["name"] for item in report["services"]] == ["b-findPets"]


def test_an_operation_that_cannot_be_a_service_is_reported_skipped_with_why(client):
    doc = json.loads(json.dumps(PETSTORE))
    doc["paths"]["/pets"]["post"]["requestBody"]["content"] = {"multipart/form-data": {"schema": {"type": "object"}}}
    report = client.post("/services/import?base_url=http://127.0.0.1:9/api", json=doc).get_json()
    skipped = report["services"][1]
    assert skipped["outcome"] == "skipped" and "multipart/form-data" in skipped["reason"]
    assert report["counts"] == {"created": 3, "skipped": 1}


def test_a_replacement_that_would_break_a_workflow_is_refused_and_the_rest_imported(client):
    import_petstore(client)
    workflow = {"name": "adopt", "services": ["pets-addPet"], "inputs": [{"name": "name", "type": "string"}],
                "outputs": [{"name": "id", "type": "int"}]}
    assert client.post("/workflows", json=workflow).status_code == 201
    doc = json.loads(json.dumps(PETSTORE))
    doc["components"]["schemas"]["Pet"]["allOf"][1]["properties"]["id"] = {"type": "string"}
    report = client.post("/services/import?prefix=pets-&base_url=http://127.0.0.1:9/api", json=doc).get_json()
    outcomes = {item["name"]: item for item in report["services"]}
    assert outcomes["pets-addPet"]["outcome"] == "refused"
    assert "would break workflow adopt" in outcomes["pets-addPet"]["reason"]
    assert outcomes["pets-deletePet"]["outcome"] == "replaced"
    stored = client.get("/services/pets-addPet").get_json()
    assert next(output for output in stored["outputs"] if output["name"] == "id")["type"] == "int"


def test_a_secret_the_document_needs_is_named_in_the_reply_and_refused_until_registered(client):
    doc = yaml.safe_load((Path(__file__).resolve().parents[2] / "examples" / "openapi" / "orders.yaml").read_text())
    dry = client.post("/services/import?base_url=http://127.0.0.1:9&dry_run=1", json=doc).get_json()
    assert dry["services"][0]["outcome"] == "refused" and "PUT /secrets/orders_token" in dry["services"][0]["reason"]
    first = client.post("/services/import?base_url=http://127.0.0.1:9", json=doc).get_json()
    assert first["secrets"] == [{"name": "orders_token", "holds": "the bearer token (orders_token)",
                                 "register": "PUT /secrets/orders_token"}]
    assert first["services"][0]["outcome"] == "refused" and "orders_token" in first["services"][0]["reason"]
    assert client.put("/secrets/orders_token", json={"value": "s3cret-value-for-the-test"}).status_code == 201
    second = client.post("/services/import?base_url=http://127.0.0.1:9", json=doc).get_json()
    assert second["services"][0]["outcome"] == "created"
    stored = client.get("/services/getOrder").get_json()
    assert stored["request"]["headers"] == {"Authorization": "Bearer {secret.orders_token}"}
    assert "s3cret-value-for-the-test" not in json.dumps([first, second, stored])


# -- documents that cannot be imported --------------------------------------------------------


def test_a_document_that_does_not_validate_is_422_naming_where_and_stores_nothing(client):
    doc = json.loads(json.dumps(PETSTORE))
    doc["paths"]["/pets/{id}"]["delete"]["responses"] = {"204": {"content": {}}}
    response = client.post("/services/import?base_url=http://127.0.0.1:9/api", json=doc)
    assert response.status_code == 422
    body = response.get_json()
    assert body["errors"]["where"] == "paths./pets/{id}.delete.responses.204"
    assert "does not validate at paths./pets/{id}.delete.responses.204" in body["message"]
    assert "is not valid" in body["errors"]["problem"]
    assert services(client) == []


def test_a_reference_outside_the_document_is_422_and_nothing_is_read(client):
    doc = json.loads(json.dumps(PETSTORE))
    doc["components"]["schemas"]["Error"] = {"$ref": "file:///etc/passwd"}
    response = client.post("/services/import", json=doc)
    assert response.status_code == 422 and "refers outside itself" in response.get_json()["message"]
    assert "root:" not in response.get_data(as_text=True)


@pytest.mark.parametrize("body, words", [
    ([1, 2], "send an OpenAPI document"),
    ({"swagger": "2.0", "info": {"title": "t", "version": "1"}, "paths": {}}, "Swagger 2.0"),
    ({"openapi": "3.0.3", "info": {"title": "t", "version": "1"}, "paths": {}, "x": 1, "url": 5}, "paths"),
    ({"url": "http://127.0.0.1:9/x", "document": {}}, "either url or document"),
    ({"url": "ftp://127.0.0.1/x"}, "http:// or https://"),
])
def test_bodies_that_are_no_document_are_4xx_naming_the_problem(client, body, words):
    response = client.post("/services/import", json=body)
    assert response.status_code in (400, 422)
    assert words in response.get_json()["message"] or words in json.dumps(response.get_json())


def test_an_unknown_operation_in_only_is_422(client):
    response = import_petstore(client, "only=addPet,nope")
    assert response.status_code == 422 and "nope" in response.get_json()["message"]


@pytest.mark.parametrize("query, field", [("prefix=no%20spaces", "prefix"), ("base_url=ftp://x/", "base_url"),
                                          ("dry_run=maybe", "dry_run")])
def test_bad_options_are_422_naming_them(client, query, field):
    response = import_petstore(client, query)
    assert response.status_code == 422 and field in response.get_json()["errors"]


# -- by URL -----------------------------------------------------------------------------------


def test_a_document_is_fetched_by_url_and_relative_servers_read_against_it(client, document_server):
    base, routes = document_server
    doc = json.loads(json.dumps(PETSTORE))
    doc["servers"] = [{"url": "/api"}]
    routes["/specs/petstore.yaml"] = (200, yaml.safe_dump(doc).encode(), {"Content-Type": "application/yaml"})
    response = client.post("/services/import", json={"url": f"{base}/specs/petstore.yaml", "only": ["findPets"]})
    assert response.status_code == 200, response.get_json()
    assert response.get_json()["services"][0]["outcome"] == "created"
    assert client.get("/services/findPets").get_json()["address"] == f"{base}/api"


@pytest.mark.parametrize("route, words", [
    ((302, b"", {"Location": "http://169.254.169.254/latest"}), "redirect (302)"),
    ((500, b"down", {}), "HTTP 500"),
    ((200, b"openapi: [unclosed", {"Content-Type": "application/yaml"}), "malformed YAML"),
    ((200, b"x" * (64 * 1024 + 1), {"Content-Type": "application/json"}), "bytes"),
])
def test_a_url_that_gives_no_readable_document_is_422_saying_why(app, document_server, route, words):
    app.config["MAX_CONTENT_LENGTH"] = 64 * 1024
    base, routes = document_server
    routes["/doc"] = route
    response = app.test_client().post("/services/import", json={"url": f"{base}/doc"})
    assert response.status_code == 422
    assert words in response.get_json()["message"]


@pytest.mark.parametrize("config_extra", [{"ALLOWED_HOSTS": "*.internal"}])
def test_a_url_whose_host_is_not_allowed_is_refused_before_any_request(config, config_extra, document_server):
    from machinery.app import create_app

    base, routes = document_server
    app = create_app({**config, **config_extra})
    try:
        response = app.test_client().post("/services/import", json={"url": f"{base}/doc"})
    finally:
        app.extensions["machinery"].close(grace_s=1)
    assert response.status_code == 422
    assert "'127.0.0.1' is not in MACHINERY_ALLOWED_HOSTS" in response.get_json()["message"]


def test_an_imported_address_outside_the_allowed_hosts_is_refused(config):
    from machinery.app import create_app

    app = create_app({**config, "ALLOWED_HOSTS": "127.0.0.1"})
    try:
        client = app.test_client()
        report = client.post("/services/import", json=PETSTORE).get_json()
    finally:
        app.extensions["machinery"].close(grace_s=1)
    assert {item["outcome"] for item in report["services"]} == {"refused"}
    assert "petstore.swagger.io" in report["services"][0]["reason"]


# -- YAML everywhere JSON is taken ------------------------------------------------------------


@pytest.mark.parametrize("content_type", ["application/yaml", "application/x-yaml", "text/yaml",
                                          "application/yaml; charset=utf-8"])
def test_a_service_definition_may_be_yaml(client, content_type):
    response = client.post("/services", data=yaml.safe_dump(definition("service-upper")), content_type=content_type)
    assert response.status_code == 201, response.get_json()
    assert client.get("/services/upper").get_json()["inputs"][0]["name"] == "message"


def test_the_shipped_yaml_definitions_register(client):
    root = Path(__file__).resolve().parents[2] / "examples" / "definitions"
    assert client.put("/secrets/orders_token", json={"value": "a-token-for-the-test"}).status_code == 201
    assert client.post("/services", json=definition("service-upper")).status_code == 201
    for name in ("service-orders.yaml", "workflow-order-note.yaml"):
        kind = "services" if name.startswith("service") else "workflows"
        response = client.post(f"/{kind}", data=(root / name).read_bytes(), content_type="application/yaml")
        assert response.status_code == 201, response.get_json()


BOMB = "a: &a [x, x, x, x, x, x, x, x, x, x]\n" + "".join(
    f"{chr(98 + level)}: &{chr(98 + level)} [{', '.join([f'*{chr(97 + level)}'] * 10)}]\n" for level in range(8))


@pytest.mark.parametrize("path", ["/services", "/workflows", "/services/import", "/e/process-text"])
@pytest.mark.parametrize("body, words", [
    (BOMB, "expands past"),
    ("a: &a [1]\n" + "".join(f"k{index}: *a\n" for index in range(150)), "aliases more than 100 times"),
    ("a: &a [*a]\n", "holding itself"),
    ("name: upper\nname: again\n", "appears twice"),
    ("name: [1, 2\n  address: x\n", "line 2 column"),
    ("n: 123456789012345678901234567890\n", "64 bits"),
    ("n: .nan\n", "not a finite number"),
    ("n: !!python/object:os.system ls\n", "not a JSON value"),
    ("a: 1\n---\nb: 2\n", "2 documents"),
    ("[" * (MAX_DEPTH + 1) + "]" * (MAX_DEPTH + 1), f"nested more than {MAX_DEPTH}"),
])
def test_bad_yaml_is_400_naming_the_problem_and_stores_nothing(client, path, body, words):
    if path.startswith("/e/"):
        from tests.conftest import register_examples

        register_examples(client)  # an event for no workflow is a 404 whatever its body
    before = services(client)
    response = client.post(path, data=body, content_type="application/yaml")
    assert response.status_code == 400, response.get_json()
    assert words in response.get_json()["message"]
    assert services(client) == before
    assert client.get("/events").get_json()["total"] == 0


def test_an_event_may_be_sent_as_yaml(client, example_services):
    from tests.conftest import EXAMPLE_RESULT, register_examples

    register_examples(client, example_services)
    body = yaml.safe_dump({"data": {"message": "The Sun will rise in the morning !"}})
    response = client.post("/e/process-text", data=body, content_type="application/yaml")
    assert response.status_code == 201 and response.get_json()["outputs"] == EXAMPLE_RESULT


def test_another_content_type_is_still_415_naming_both(client):
    response = client.post("/services", data="name: upper", content_type="text/plain")
    assert response.status_code == 415
    assert "application/json" in response.get_json()["message"] and "application/yaml" in response.get_json()["message"]


def test_an_imported_service_keeps_its_reply_type_and_an_edited_output_is_checked_against_it(client):
    assert import_petstore(client).status_code == 200
    service = client.get("/services/pets-find-pet-by-id").get_json()
    fields = {field["name"]: field for field in service["reply"]["body"]["type"]["fields"]}
    assert fields["id"]["type"] == "int" and fields["name"]["type"] == "string"
    edited = {key: service[key] for key in ("name", "address", "request", "inputs", "reply")}
    wrong = {**edited, "outputs": [{"name": "name", "type": "int", "from": "body.name"}]}
    response = client.put("/services/pets-find-pet-by-id", json=wrong)
    assert response.status_code == 422
    assert "body.name is string in the declared reply, but the output is int" in response.get_json()["message"]
    typo = {**edited, "outputs": [{"name": "tag", "type": "string", "from": "body.tags"}]}
    response = client.put("/services/pets-find-pet-by-id", json=typo)
    assert response.status_code == 422 and "no field 'tags'" in response.get_json()["message"]
    fine = {**edited, "outputs": [{"name": "label", "type": "string", "from": "body.tag"}]}
    assert client.put("/services/pets-find-pet-by-id", json=fine).status_code == 200

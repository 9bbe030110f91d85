"""Import OpenAPI documents over real HTTP and run what they became: petstore-expanded against a real
petstore server, the orders example with its bearer token, and `machinery import-openapi`."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from machinery import cli
from machinery.serving import ServerThread
from tests.conftest import ROOT
from tests.support.petstore import petstore_app

pytestmark = pytest.mark.e2e

PETSTORE = Path(__file__).resolve().parent.parent / "fixtures" / "openapi" / "petstore-expanded.yaml"
ORDERS_DOCUMENT = ROOT / "examples" / "openapi" / "orders.yaml"
TOKEN = "orders-token-for-the-end-to-end-test"


@pytest.fixture
def petstore():
    app = petstore_app()
    server = ServerThread(app).start()
    yield server.url.rstrip("/"), app
    server.stop()


@pytest.fixture
def orders():
    app = cli._load_example("orders")
    app.config["ORDERS_TOKEN"] = TOKEN
    server = ServerThread(app).start()
    yield server.url.rstrip("/")
    server.stop()


def import_petstore(http, api, base):
    response = http.post(f"{api}/services/import", params={"prefix": "pets-", "base_url": f"{base}/api"},
                         data=PETSTORE.read_bytes(), headers={"Content-Type": "application/yaml"}, timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["counts"] == {"created": 4}


def test_imported_petstore_operations_chain_in_a_workflow_and_run(http, api, petstore):
    base, server = petstore
    import_petstore(http, api, base)
    workflow = {"name": "adopt", "services": ["pets-addPet", "pets-find-pet-by-id"],
                "inputs": [{"name": "name", "type": "string"}, {"name": "tag", "type": "string"}],
                "outputs": [{"name": "id", "type": "int"}, {"name": "name", "type": "string"}]}
    assert http.post(f"{api}/workflows", json=workflow, timeout=10).status_code == 201
    response = http.post(f"{api}/e/adopt", json={"data": {"name": "Rex", "tag": "dog"}}, timeout=30)
    assert response.status_code == 201, response.text
    assert response.json()["outputs"] == {"id": 1, "name": "Rex"}
    assert server.config["seen"] == [("POST", "/api/pets"), ("GET", "/api/pets/1")]


def test_an_imported_get_with_repeated_query_parameters_answers_the_whole_reply(http, api, petstore):
    base, server = petstore
    import_petstore(http, api, base)
    for name, tag in (("Rex", "dog"), ("Tom", "cat"), ("Kit", "cat")):
        http.post(f"{base}/api/pets", json={"name": name, "tag": tag}, timeout=10)
    workflow = {"name": "cats", "services": ["pets-findPets"],
                "inputs": [{"name": "tags", "type": {"type": "array", "items": "string"}},
                           {"name": "limit", "type": "int"}],
                "outputs": [{"name": "body", "type": {"type": "array", "items": {
                    "type": "object", "fields": [{"name": "name", "type": "string"}]}}}]}
    assert http.post(f"{api}/workflows", json=workflow, timeout=10).status_code == 201, "workflow"
    response = http.post(f"{api}/e/cats", json={"data": {"tags": ["cat", "bird"], "limit": 5}}, timeout=30)
    assert response.status_code == 201, response.text
    assert [pet["name"] for pet in response.json()["outputs"]["body"]] == ["Tom", "Kit"]
    assert server.config["seen"][-1] == ("GET", "/api/pets?tags=cat&tags=bird&limit=5")


def test_an_imported_delete_of_a_missing_pet_fails_the_step_with_the_status(http, api, petstore):
    base, _ = petstore
    import_petstore(http, api, base)
    workflow = {"name": "remove", "services": ["pets-deletePet"], "inputs": [{"name": "id", "type": "int"}],
                "outputs": []}
    assert http.post(f"{api}/workflows", json=workflow, timeout=10).status_code == 201
    response = http.post(f"{api}/e/remove", json={"data": {"id": 99}}, timeout=30)
    assert response.status_code == 502
    assert "404" in json.dumps(response.json()["error"])


def test_the_orders_document_imports_and_calls_the_service_with_the_secret(http, api, orders):
    assert http.put(f"{api}/secrets/orders_token", json={"value": TOKEN}, timeout=10).status_code == 201
    response = http.post(f"{api}/services/import", params={"base_url": orders}, data=ORDERS_DOCUMENT.read_bytes(),
                         headers={"Content-Type": "application/yaml"}, timeout=30)
    assert response.status_code == 200 and response.json()["services"][0]["outcome"] == "created", response.text
    workflow = {"name": "read-order", "services": ["getOrder"], "inputs": [{"name": "order_id", "type": "string"}],
                "outputs": [{"name": "order", "type": {"type": "object", "fields": [
                    {"name": "total", "type": "float"},
                    {"name": "lines", "type": {"type": "array", "items": {"type": "object", "fields": [
                        {"name": "sku", "type": "string"}]}}}]}}]}
    assert http.post(f"{api}/workflows", json=workflow, timeout=10).status_code == 201
    event = http.post(f"{api}/e/read-order", json={"data": {"order_id": "A-1002"}}, timeout=30)
    assert event.status_code == 201, event.text
    order = event.json()["outputs"]["order"]
    assert order["total"] == 29.0 and [line["sku"] for line in order["lines"]] == ["SKU-3"]
    record = http.get(f"{api}/events/{event.json()['event_id']}", timeout=10).text
    assert TOKEN not in record and TOKEN not in event.text


def test_the_command_imports_a_file_then_a_dry_run_says_it_would_replace(api, petstore, capsys):
    base, _ = petstore
    code = cli.main(["import-openapi", str(PETSTORE), "--prefix", "cli-", "--base-url", f"{base}/api",
                     "--only", "findPets,addPet", "--api", api])
    printed = capsys.readouterr().out
    assert code == 0, printed
    assert "created        cli-findPets" in printed and "created        cli-addPet" in printed
    assert "2 created" in printed
    code = cli.main(["import-openapi", str(PETSTORE), "--prefix", "cli-", "--base-url", f"{base}/api",
                     "--only", "findPets", "--dry-run", "--api", api])
    printed = capsys.readouterr().out
    assert code == 0 and "would replace  cli-findPets" in printed and "dry run" in printed


def test_the_command_names_the_secret_to_register_and_fails_while_it_is_missing(api, tmp_path, capsys):
    document = tmp_path / "orders.json"
    document.write_text(json.dumps(yaml.safe_load(ORDERS_DOCUMENT.read_text())))
    code = cli.main(["import-openapi", str(document), "--base-url", "http://127.0.0.1:9", "--api", api])
    printed = capsys.readouterr().out
    assert code == 1
    assert "refused        getOrder" in printed
    assert f"curl -X PUT {api}/secrets/orders_token" in printed


def test_the_command_sends_a_url_for_the_api_to_fetch(api, petstore, capsys):
    base, server = petstore  # the petstore serves no document: the API's fetch gets its 404
    code = cli.main(["import-openapi", f"{base}/openapi.yaml", "--api", api])
    assert code == 1 and "HTTP 404" in capsys.readouterr().err
    assert ("GET", "/openapi.yaml") in server.config["seen"]


def test_apply_registers_yaml_files_holding_several_definitions(api, http, example_services, tmp_path, capsys):
    upper = {"name": "upper", "address": example_services["upper"], "inputs": [{"name": "message", "type": "string"}],
             "outputs": [{"name": "message", "type": "string"}]}
    shout = {"name": "shout", "services": ["upper"], "inputs": [{"name": "message", "type": "string"}],
             "outputs": [{"name": "message", "type": "string"}]}
    (tmp_path / "both.yaml").write_text(yaml.safe_dump(shout) + "---\n" + yaml.safe_dump(upper))
    assert cli.main(["apply", "-f", str(tmp_path), "--api", api]) == 0
    printed = capsys.readouterr().out
    assert printed.index("service 'upper' registered") < printed.index("workflow 'shout' registered")
    event = http.post(f"{api}/e/shout", json={"data": {"message": "yaml"}}, timeout=30)
    assert event.status_code == 201 and event.json()["outputs"] == {"message": "YAML"}


def test_apply_refuses_a_yaml_file_that_breaks_the_rules_naming_it(api, tmp_path, capsys):
    (tmp_path / "dup.yml").write_text("name: a\nname: b\n")
    with pytest.raises(SystemExit):
        cli.main(["apply", "-f", str(tmp_path / "dup.yml"), "--api", api])
    assert "dup.yml: malformed YAML: key 'name' appears twice in one mapping, at line 2 column 1" in \
        capsys.readouterr().err


def test_the_orders_example_answers_only_with_its_bearer_token(http, orders):
    assert http.get(f"{orders}/orders/A-1001", timeout=10).status_code == 401
    wrong = http.get(f"{orders}/orders/A-1001", headers={"Authorization": "Bearer nope"}, timeout=10)
    assert wrong.status_code == 401 and wrong.headers["WWW-Authenticate"].startswith("Bearer")
    good = {"Authorization": f"Bearer {TOKEN}"}
    plain = http.get(f"{orders}/orders/A-1001", headers=good, timeout=10).json()["order"]
    assert plain["total"] == 288.0 and "product" not in plain["lines"][0]
    expanded = http.get(f"{orders}/orders/A-1001?expand=lines", headers=good, timeout=10).json()["order"]
    assert expanded["lines"][0]["product"] == "walnut desk"
    assert http.get(f"{orders}/orders/B-1", headers=good, timeout=10).status_code == 404


def test_the_orders_document_imported_by_url_calls_the_service_that_served_it(http, api, orders):
    # The prefix names the secret too, so that two APIs' "bearerAuth" schemes do not share one.
    assert http.put(f"{api}/secrets/url_orders_token", json={"value": TOKEN}, timeout=10).status_code == 201
    response = http.post(f"{api}/services/import", json={"url": f"{orders}/openapi.yaml", "prefix": "url-"},
                         timeout=30)
    assert response.status_code == 200, response.text
    assert response.json()["services"][0]["outcome"] == "created"
    assert http.get(f"{api}/services/url-getOrder", timeout=10).json()["address"] == f"{orders}/"
    workflow = {"name": "by-url", "services": ["url-getOrder"], "inputs": [{"name": "order_id", "type": "string"}],
                "outputs": [{"name": "order", "type": "object"}]}
    assert http.post(f"{api}/workflows", json=workflow, timeout=10).status_code == 201
    event = http.post(f"{api}/e/by-url", json={"data": {"order_id": "A-1001"}}, timeout=30)
    assert event.status_code == 201 and event.json()["outputs"]["order"]["id"] == "A-1001", event.text


def test_the_orders_file_without_base_url_is_skipped_saying_to_give_one(http, api):
    response = http.post(f"{api}/services/import", data=ORDERS_DOCUMENT.read_bytes(),
                         headers={"Content-Type": "application/yaml"}, timeout=30)
    item = response.json()["services"][0]
    assert item["outcome"] == "skipped" and "give base_url" in item["reason"]

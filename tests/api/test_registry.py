"""Registering services and workflows through the API, and every bad input getting its 4xx."""

import pytest

from tests.conftest import definition, register_examples


def test_registering_a_service_answers_201_with_its_id_and_ack_date(client):
    response = client.post("/services", json=definition("service-upper"))
    assert response.status_code == 201
    body = response.get_json()
    assert len(body["service_id"]) == 24 and body["name"] == "upper"
    assert body["ack_date"].endswith("+00:00")


def test_registering_the_same_name_again_replaces_it_with_200(client):
    first = client.post("/services", json=definition("service-upper")).get_json()
    changed = {**definition("service-upper"), "address": "http://elsewhere:1/"}
    response = client.post("/services", json=changed)
    assert response.status_code == 200
    assert response.get_json()["service_id"] == first["service_id"]
    assert client.get("/services/upper").get_json()["address"] == "http://elsewhere:1/"


def test_the_first_prototypes_aliases_register_too(client):
    assert client.post("/s", json=definition("service-upper")).status_code == 201
    workflow = {"name": "w", "services": ["upper"], "inputs": [{"name": "message", "type": "string"}], "outputs": []}
    assert client.post("/w", json=workflow).status_code == 201


def test_a_service_is_found_by_id_or_name(client):
    service_id = client.post("/services", json=definition("service-upper")).get_json()["service_id"]
    assert client.get(f"/services/{service_id}").get_json()["name"] == "upper"
    assert client.get("/services/upper").get_json()["service_id"] == service_id


def test_services_are_listed_in_pages(client):
    register_examples(client)
    page = client.get("/services?page=2&page_size=2").get_json()
    assert page["total"] == 5 and page["page"] == 2 and page["page_size"] == 2
    assert [s["name"] for s in page["items"]] == ["space-counter", "upper"]


def test_put_replaces_a_services_definition(client):
    client.post("/services", json=definition("service-upper"))
    response = client.put("/services/upper", json={**definition("service-upper"), "timeout_s": 2})
    assert response.status_code == 200 and response.get_json()["timeout_s"] == 2


def test_put_cannot_rename_a_service(client):
    client.post("/services", json=definition("service-upper"))
    response = client.put("/services/upper", json={**definition("service-upper"), "name": "lower"})
    assert response.status_code == 422 and "cannot change" in response.get_json()["message"]


def test_put_of_an_unknown_service_is_404(client):
    assert client.put("/services/nope", json=definition("service-upper")).status_code == 404


def test_deleting_a_service_in_use_answers_409_naming_the_workflows(client):
    register_examples(client)
    response = client.delete("/services/reverse")
    assert response.status_code == 409
    body = response.get_json()
    assert body["errors"]["workflows"] == ["process-text", "shout-async"]
    assert "process-text" in body["message"]
    assert client.get("/services/reverse").status_code == 200


def test_deleting_an_unused_service_answers_204(client):
    client.post("/services", json=definition("service-upper"))
    assert client.delete("/services/upper").status_code == 204
    assert client.get("/services/upper").status_code == 404


def test_replacing_a_service_so_that_a_workflow_breaks_is_refused(client):
    register_examples(client)
    broken = {**definition("service-upper"), "outputs": [{"name": "message", "type": "int"}]}
    response = client.post("/services", json=broken)
    assert response.status_code == 409
    assert "process-text" in response.get_json()["errors"]["workflows"]
    assert client.get("/services/upper").get_json()["outputs"][0]["type"] == "string"


def test_the_example_workflow_registers_as_shipped(client):
    register_examples(client)
    body = client.get("/workflows/process-text").get_json()
    assert body["version"] == 1 and body["services"] == ["upper", "reverse", "space-counter"]


def test_replacing_a_workflow_bumps_its_version(client):
    register_examples(client)
    response = client.post("/workflows", json=definition("workflow-process-text"))
    assert response.status_code == 200 and response.get_json()["version"] == 2


def test_a_workflow_with_unknown_services_names_each(client):
    client.post("/services", json=definition("service-upper"))
    body = {"name": "w", "services": ["upper", "ghost", "phantom"],
            "inputs": [{"name": "message", "type": "string"}], "outputs": []}
    response = client.post("/workflows", json=body)
    assert response.status_code == 422
    assert response.get_json()["message"] == "unknown services: ghost, phantom"


def test_a_data_flow_break_names_the_step_the_field_and_what_was_available(client):
    register_examples(client)
    body = {"name": "w", "services": ["space-counter", "upper"],
            "inputs": [{"name": "message", "type": "string"}], "outputs": []}
    response = client.post("/workflows", json=body)
    assert response.status_code == 422
    [problem] = response.get_json()["errors"]
    assert problem["step"] == 1 and problem["field"] == "message" and problem["available"] == {"message": "int"}
    assert client.get("/workflows/w").status_code == 404


def test_deleting_a_workflow_answers_204(client):
    register_examples(client)
    assert client.delete("/workflows/process-text").status_code == 204
    assert client.get("/workflows/process-text").status_code == 404


def test_workflows_are_listed(client):
    register_examples(client)
    page = client.get("/workflows").get_json()
    assert [w["name"] for w in page["items"]] == ["process-text", "shout-async"] and page["total"] == 2


@pytest.mark.parametrize("path", ["/services/not-an-id", "/services/123", "/workflows/6b08b8b8c0a1e7920e84c1fb",
                                  "/events/zzz", "/events/6b08b8b8c0a1e7920e84c1fb"])
def test_unknown_ids_and_names_are_404_with_the_error_shape(client, path):
    response = client.get(path)
    assert response.status_code == 404
    assert set(response.get_json()) == {"code", "status", "message"}


def test_a_body_that_is_not_json_is_415(client):
    response = client.post("/services", data="name=upper", content_type="application/x-www-form-urlencoded")
    assert response.status_code == 415
    assert "application/json" in response.get_json()["message"]


@pytest.mark.parametrize("raw, words", [
    ("{\"name\": ", "malformed JSON"),
    ("", "empty"),
    ("{\"a\": 1, \"a\": 2}", "appears twice"),
    ("{\"a\": NaN}", "NaN"),
    ("[" * 100 + "]" * 100, "nested"),
])
def test_unreadable_json_is_400_saying_why(client, raw, words):
    response = client.post("/services", data=raw, content_type="application/json")
    assert response.status_code == 400
    assert words in response.get_json()["message"]


@pytest.mark.parametrize("change, field", [
    ({"address": "ftp://upper.local/"}, "address"),
    ({"address": "not a url"}, "address"),
    ({"address": "http://user:password@upper.local/"}, "address"),
    ({"name": 12}, "name"),
    ({"name": ""}, "name"),
    ({"name": "$where"}, "name"),
    ({"inputs": "message"}, "inputs"),
    ({"inputs": [{"name": "message", "type": "strin"}]}, "inputs"),
    ({"inputs": [{"name": "m", "type": "string"}, {"name": "m", "type": "int"}]}, "inputs"),
    ({"timeout_s": -1}, "timeout_s"),
    ({"retry": {"max_attempts": 0}}, "retry"),
    ({"surprise": True}, "surprise"),
])
def test_bad_service_definitions_are_422_naming_the_field(client, change, field):
    response = client.post("/services", json={**definition("service-upper"), **change})
    assert response.status_code == 422
    body = response.get_json()
    assert field in body["errors"] and field in body["message"]
    assert client.get("/services").get_json()["total"] == 0


def test_a_missing_required_field_is_named(client):
    body = definition("service-upper")
    del body["outputs"]
    response = client.post("/services", json=body)
    assert response.status_code == 422 and "outputs" in response.get_json()["errors"]


def test_healthcheck_is_204(client):
    assert client.get("/healthcheck").status_code == 204


def test_the_openapi_spec_documents_the_error_shape(client):
    spec = client.get("/openapi.json").get_json()
    assert "/services" in spec["paths"] and "/e/{workflow_ref}" in spec["paths"]
    assert set(spec["components"]["schemas"]["Error"]["properties"]) == {"code", "status", "message", "errors"}


def test_an_unknown_method_is_405_with_the_error_shape(client):
    response = client.patch("/services")
    assert response.status_code == 405 and response.get_json()["code"] == 405


def test_the_access_log_never_shows_a_callback_token(client, caplog):
    with caplog.at_level("INFO", logger="machinery.access"):
        client.post("/callbacks/secret-token-value", json={})
    paths = [record.path for record in caplog.records if record.name == "machinery.access"]
    assert paths == ["/callbacks/<token>"] and "secret-token-value" not in caplog.text


def test_the_cli_sends_the_api_key_of_its_environment(monkeypatch):
    from machinery.cli import api_headers

    monkeypatch.delenv("MACHINERY_API_KEY", raising=False)
    assert api_headers() == {}
    monkeypatch.setenv("MACHINERY_API_KEY", "k" * 20)
    assert api_headers() == {"Authorization": "Bearer " + "k" * 20}


def test_new_events_snapshot_the_services_as_they_are_now(client):
    # GIVEN an event sent before a service is replaced
    register_examples(client)
    before = client.post("/e/process-text?mode=async", json={"message": "a"}).get_json()["event_id"]
    client.post("/services", json={**definition("service-upper"), "address": "http://moved.local:5000/"})
    # WHEN another event is sent after
    after = client.post("/e/process-text?mode=async", json={"message": "a"}).get_json()["event_id"]
    # THEN the new event's plan has the new address, and the first keeps the plan it started with
    address = [client.get(f"/events/{event_id}").get_json()["plan"]["steps"][0]["service"]["address"]
               for event_id in (before, after)]
    assert address == ["http://upper.local:5000/", "http://moved.local:5000/"]


def test_an_events_ack_date_is_the_same_in_the_reply_and_the_record(client):
    register_examples(client)
    reply = client.post("/e/process-text?mode=async", json={"message": "a"}).get_json()
    assert client.get(f"/events/{reply['event_id']}").get_json()["ack_date"] == reply["ack_date"]

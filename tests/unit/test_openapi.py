"""Turning OpenAPI documents into service definitions: parameters, bodies, responses, references,
security, servers, and what is skipped and why."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest
import yaml

from machinery.language import openapi

PETSTORE = Path(__file__).resolve().parent.parent / "fixtures" / "openapi" / "petstore-expanded.yaml"
OK = {"200": {"description": "ok", "content": {"application/json": {"schema": {
    "type": "object", "required": ["id"], "properties": {"id": {"type": "string"}}}}}}}


def document(paths: dict, version: str = "3.0.3", **extra) -> dict:
    return {"openapi": version, "info": {"title": "t", "version": "1"},
            "servers": [{"url": "http://api.test/v1"}], "paths": paths, **extra}


def one(doc: dict, **options) -> openapi.Operation:
    conversion = openapi.convert(doc, **options)
    assert len(conversion.operations) == 1, [operation.label for operation in conversion.operations]
    return conversion.operations[0]


def petstore() -> dict:
    return yaml.safe_load(PETSTORE.read_text())


# -- the OpenAPI Initiative's petstore-expanded -------------------------------------------------


def test_petstore_expanded_gives_one_service_per_operation_named_from_operation_ids():
    conversion = openapi.convert(petstore(), prefix="pets-")
    assert [(operation.label, operation.name) for operation in conversion.operations] == [
        ("GET /pets", "pets-findPets"), ("POST /pets", "pets-addPet"),
        ("GET /pets/{id}", "pets-find-pet-by-id"), ("DELETE /pets/{id}", "pets-deletePet")]
    assert all(operation.service and not operation.skipped for operation in conversion.operations)
    assert conversion.title == "Swagger Petstore" and conversion.openapi == "3.0.0"


def test_an_operation_id_that_is_not_a_name_is_made_one_and_the_report_says_so():
    find = openapi.convert(petstore()).operations[2]
    assert find.name == "find-pet-by-id"
    assert any("'find pet by id' is not a valid service name" in warning for warning in find.warnings)


def test_query_parameters_become_optional_inputs_and_the_request_names_them():
    service = openapi.convert(petstore()).operations[0].service
    assert service["address"] == "http://petstore.swagger.io/api"
    assert service["request"] == {"method": "GET", "path": "/pets", "query": {"tags": "tags", "limit": "limit"}}
    assert service["inputs"][0]["name"] == "tags" and service["inputs"][0]["required"] is False
    assert service["inputs"][0]["type"] == {"type": "array", "items": "string"}
    assert service["inputs"][1]["type"] == "int"


def test_an_array_reply_is_one_output_body_with_all_of_merged_into_its_items():
    service = openapi.convert(petstore()).operations[0].service
    (output,) = service["outputs"]
    assert output["name"] == "body" and output["from"] == "body"
    fields = {field["name"]: field for field in output["type"]["items"]["fields"]}
    assert set(fields) == {"name", "tag", "id"}
    assert fields["id"]["type"] == "int" and fields["tag"].get("required") is False


def test_an_object_body_gives_one_input_per_property_and_an_object_reply_one_output_per_property():
    service = openapi.convert(petstore()).operations[1].service
    assert service["request"] == {"method": "POST", "path": "/pets", "body": ["name", "tag"]}
    assert [(field["name"], field.get("required", True)) for field in service["inputs"]] == [
        ("name", True), ("tag", False)]
    assert [output["name"] for output in service["outputs"]] == ["name", "tag", "id"]
    assert service["retry"]["max_attempts"] == 1  # a POST to an API that is not ours is not repeated


def test_a_path_parameter_is_a_required_input_and_a_204_gives_no_outputs():
    delete = openapi.convert(petstore()).operations[3].service
    assert delete["request"] == {"method": "DELETE", "path": "/pets/{id}"}
    assert delete["inputs"] == [{"name": "id", "type": "int", "description": "ID of pet to delete"}]
    assert delete["outputs"] == [] and delete["success"] == [204]


def test_only_keeps_the_operations_named():
    conversion = openapi.convert(petstore(), only=["addPet", "deletePet"])
    assert [operation.operation_id for operation in conversion.operations] == ["addPet", "deletePet"]


def test_only_naming_an_operation_the_document_lacks_is_refused():
    with pytest.raises(openapi.OpenAPIError, match="nope"):
        openapi.convert(petstore(), only=["addPet", "nope"])


# -- parameters -------------------------------------------------------------------------------


def test_parameters_of_the_path_item_and_the_operation_merge_and_headers_become_templates():
    doc = document({"/orders/{order-id}": {
        "parameters": [{"name": "order-id", "in": "path", "required": True, "schema": {"type": "string"}}],
        "get": {"operationId": "getOrder", "responses": OK, "parameters": [
            {"name": "X-Tenant", "in": "header", "required": True, "schema": {"type": "string"}},
            {"name": "expand", "in": "query", "schema": {"type": "string", "enum": ["lines"]}}]}}})
    service = one(doc).service
    assert service["request"] == {"method": "GET", "path": "/orders/{order_id}",
                                  "query": {"expand": "expand"}, "headers": {"X-Tenant": "{X_Tenant}"}}
    assert [field["name"] for field in service["inputs"]] == ["order_id", "X_Tenant", "expand"]
    assert service["inputs"][2]["type"] == {"type": "string", "enum": ["lines"]}


def test_a_parameter_name_used_twice_gets_its_location_added():
    doc = document({"/items/{id}": {"get": {"operationId": "item", "responses": OK, "parameters": [
        {"name": "id", "in": "path", "required": True, "schema": {"type": "integer"}},
        {"name": "id", "in": "query", "schema": {"type": "integer"}}]}}})
    service = one(doc).service
    assert service["request"]["query"] == {"id": "id_query"} and service["request"]["path"] == "/items/{id}"


@pytest.mark.parametrize("parameter, reason", [
    ({"name": "session", "in": "cookie", "required": True, "schema": {"type": "string"}}, "cookie parameter 'session'"),
    ({"name": "ids", "in": "path", "required": True, "schema": {"type": "array", "items": {"type": "string"}}},
     "path parameter 'ids' is an array"),
    ({"name": "filter", "in": "query", "required": True, "style": "deepObject",
      "schema": {"type": "object", "properties": {"a": {"type": "string"}}}}, "query parameter 'filter' is an object"),
])
def test_a_required_parameter_machinery_cannot_send_skips_the_operation_saying_why(parameter, reason):
    path = "/x/{ids}" if parameter["in"] == "path" else "/x"
    result = one(document({path: {"get": {"operationId": "x", "responses": OK, "parameters": [parameter]}}}))
    assert result.service is None and reason in result.skipped


def test_an_optional_cookie_parameter_is_dropped_with_a_warning():
    result = one(document({"/x": {"get": {"operationId": "x", "responses": OK, "parameters": [
        {"name": "theme", "in": "cookie", "schema": {"type": "string"}}]}}}))
    assert result.service["inputs"] == [] and any("cookie parameter 'theme'" in w for w in result.warnings)


# -- bodies -----------------------------------------------------------------------------------


def test_a_required_multipart_body_skips_the_operation_saying_why():
    body = {"required": True, "content": {"multipart/form-data": {"schema": {"type": "object"}}}}
    result = one(document({"/upload": {"post": {"operationId": "upload", "requestBody": body, "responses": OK}}}))
    assert result.service is None and "multipart/form-data" in result.skipped and "not JSON" in result.skipped


def test_an_optional_form_body_is_never_sent_and_the_report_warns():
    body = {"content": {"application/x-www-form-urlencoded": {"schema": {"type": "object"}}}}
    result = one(document({"/f": {"post": {"operationId": "f", "requestBody": body, "responses": OK}}}))
    assert result.service["request"]["body"] is None
    assert any("is not JSON and is never sent" in warning for warning in result.warnings)


def test_a_required_array_body_skips_the_operation_saying_why():
    body = {"required": True, "content": {"application/json": {"schema": {
        "type": "array", "items": {"type": "integer"}}}}}
    result = one(document({"/n": {"put": {"operationId": "n", "requestBody": body, "responses": OK}}}))
    assert result.service is None and result.skipped == "its JSON body is an array; a service's body is a JSON object"


def test_a_free_form_object_body_is_one_input_sent_whole():
    body = {"required": True, "content": {"application/json": {"schema": {"type": "object"}}}}
    service = one(document({"/n": {"put": {"operationId": "n", "requestBody": body, "responses": OK}}})).service
    assert service["request"]["body"] == "body"
    assert service["inputs"] == [{"name": "body", "type": "object"}]


def test_a_body_property_clashing_with_a_parameter_makes_the_body_one_input():
    body = {"required": True, "content": {"application/json": {"schema": {
        "type": "object", "properties": {"id": {"type": "string"}, "note": {"type": "string"}}}}}}
    result = one(document({"/o/{id}": {"patch": {"operationId": "o", "requestBody": body, "responses": OK,
                                                 "parameters": [{"name": "id", "in": "path", "required": True,
                                                                 "schema": {"type": "string"}}]}}}))
    assert result.service["request"]["body"] == "body"
    assert [field["name"] for field in result.service["inputs"]] == ["id", "body"]
    assert any("clash" in warning for warning in result.warnings)


def test_a_json_media_type_with_a_suffix_counts_as_json():
    body = {"required": True, "content": {"application/merge-patch+json": {"schema": {
        "type": "object", "properties": {"note": {"type": "string"}}}}}}
    service = one(document({"/o": {"patch": {"operationId": "o", "requestBody": body, "responses": OK}}})).service
    assert service["request"]["body"] == ["note"]


# -- responses --------------------------------------------------------------------------------


def test_an_operation_answering_only_text_is_skipped_as_having_no_json_response():
    responses = {"200": {"description": "ok", "content": {"text/plain": {"schema": {"type": "string"}}}}}
    result = one(document({"/t": {"get": {"operationId": "t", "responses": responses}}}))
    assert result.service is None and result.skipped == "no JSON response: 200 (text/plain)"


def test_a_property_the_model_cannot_say_becomes_any_and_the_report_names_it():
    responses = {"200": {"description": "ok", "content": {"application/json": {"schema": {
        "type": "object", "properties": {"value": {"oneOf": [{"type": "string"}, {"type": "object"}]}}}}}}}
    result = one(document({"/v": {"get": {"operationId": "v", "responses": responses}}}))
    assert result.service["outputs"][0]["type"] == "any"
    assert any(warning.startswith("response.value") and "any" in warning for warning in result.warnings)


def test_a_response_marked_as_success_is_listed_and_adds_a_status_output():
    responses = {**OK, "404": {"description": "none", "x-machinery-success": True,
                               "content": {"application/json": {"schema": {"type": "object"}}}},
                 "500": {"description": "broken"}}
    service = one(document({"/o": {"get": {"operationId": "o", "responses": responses}}})).service
    assert service["success"] == [200, 404]
    assert service["outputs"] == [{"name": "id", "type": "string", "required": False},
                                  {"name": "status", "type": "int", "description": "the reply's HTTP status",
                                   "from": "status"}]


def test_only_a_default_response_is_taken_as_the_success_with_a_warning():
    responses = {"default": OK["200"]}
    result = one(document({"/d": {"get": {"operationId": "d", "responses": responses}}}))
    assert "success" not in result.service and result.service["outputs"][0]["name"] == "id"
    assert any("'default' response is taken" in warning for warning in result.warnings)


def test_an_output_name_that_is_no_context_key_keeps_the_reply_whole():
    responses = {"200": {"description": "ok", "content": {"application/json": {"schema": {
        "type": "object", "properties": {"a.b": {"type": "string"}}}}}}}
    service = one(document({"/o": {"get": {"operationId": "o", "responses": responses}}})).service
    assert [(output["name"], output["from"]) for output in service["outputs"]] == [("body", "body")]


# -- references -------------------------------------------------------------------------------


def test_references_to_parameters_bodies_responses_and_schemas_are_followed():
    doc = document({"/o/{id}": {"put": {
        "operationId": "put", "parameters": [{"$ref": "#/components/parameters/Id"}],
        "requestBody": {"$ref": "#/components/requestBodies/Order"},
        "responses": {"200": {"$ref": "#/components/responses/Order"}}}}}, components={
        "parameters": {"Id": {"name": "id", "in": "path", "required": True,
                              "schema": {"$ref": "#/components/schemas/Id"}}},
        "requestBodies": {"Order": {"required": True, "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Order"}}}}},
        "responses": {"Order": {"description": "ok", "content": {"application/json": {
            "schema": {"$ref": "#/components/schemas/Order"}}}}},
        "schemas": {"Id": {"type": "integer"},
                    "Order": {"type": "object", "required": ["total"], "properties": {
                        "total": {"type": "number"},
                        "lines": {"type": "array", "items": {"$ref": "#/components/schemas/Line"}}}},
                    "Line": {"type": "object", "properties": {"sku": {"type": "string"}}}}})
    service = one(doc).service
    assert service["inputs"][0] == {"name": "id", "type": "int"}
    assert service["request"]["body"] == ["total", "lines"]
    assert service["outputs"][1]["type"] == {"type": "array", "items": {"type": "object", "fields": [
        {"name": "sku", "type": "string", "required": False}]}}


def test_a_recursive_schema_becomes_any_where_it_recurs_with_a_warning():
    doc = document({"/n": {"get": {"operationId": "n", "responses": {"200": {"description": "ok", "content": {
        "application/json": {"schema": {"$ref": "#/components/schemas/Node"}}}}}}}}, components={"schemas": {
            "Node": {"type": "object", "properties": {"name": {"type": "string"},
                                                      "child": {"$ref": "#/components/schemas/Node"}}}}})
    result = one(doc)
    child = result.service["outputs"][1]
    assert child["name"] == "child" and child["type"]["type"] == "object"
    assert any("refers to itself" in warning for warning in result.warnings)


def test_a_reference_cycle_between_parameters_is_refused_naming_it():
    doc = document({"/x": {"get": {"operationId": "x", "responses": OK,
                                   "parameters": [{"$ref": "#/components/parameters/A"}]}}},
                   components={"parameters": {"A": {"$ref": "#/components/parameters/B"},
                                              "B": {"$ref": "#/components/parameters/A"}}})
    with pytest.raises(openapi.OpenAPIError) as caught:
        openapi.Resolver(doc, "3.0.3").deref({"$ref": "#/components/parameters/A"}, "paths./x.get.parameters[0]")
    assert "leads back to itself" in caught.value.message


def test_a_reference_in_3_1_keeps_its_sibling_description():
    doc = document({"/x": {"get": {"operationId": "x", "parameters": [{"name": "q", "in": "query", "schema": {
        "$ref": "#/components/schemas/Q"}}], "responses": OK}}}, version="3.1.0",
        components={"schemas": {"Q": {"type": ["string", "null"]}}})
    (field,) = one(doc).service["inputs"]
    assert field["name"] == "q" and field["required"] is False


# -- security ---------------------------------------------------------------------------------


def test_a_bearer_scheme_becomes_an_authorization_header_holding_a_secret():
    doc = document({"/o": {"get": {"operationId": "o", "responses": OK}}}, security=[{"token": []}],
                   components={"securitySchemes": {"token": {"type": "http", "scheme": "bearer"}}})
    conversion = openapi.convert(doc, prefix="shop-")
    operation = conversion.operations[0]
    assert operation.service["request"]["headers"] == {"Authorization": "Bearer {secret.shop_token}"}
    assert operation.secrets == ["shop_token"] and "bearer token" in conversion.secrets["shop_token"]


def test_an_api_key_header_becomes_that_header_and_an_operation_may_need_none():
    doc = document({"/o": {"get": {"operationId": "o", "responses": OK},
                           "post": {"operationId": "p", "responses": OK, "security": []}}},
                   security=[{"key": []}],
                   components={"securitySchemes": {"key": {"type": "apiKey", "in": "header", "name": "X-API-Key"}}})
    first, second = openapi.convert(doc).operations
    assert first.service["request"]["headers"] == {"X-API-Key": "{secret.key}"}
    assert "headers" not in second.service["request"]


def test_an_api_key_in_the_query_cannot_be_sent_so_the_operation_is_skipped():
    doc = document({"/o": {"get": {"operationId": "o", "responses": OK}}}, security=[{"key": []}],
                   components={"securitySchemes": {"key": {"type": "apiKey", "in": "query", "name": "api_key"}}})
    result = one(doc)
    assert result.service is None and "security cannot be expressed" in result.skipped and "key" in result.skipped


# -- servers and names ------------------------------------------------------------------------


def test_server_variables_take_their_defaults():
    doc = document({"/o": {"get": {"operationId": "o", "responses": OK}}})
    doc["servers"] = [{"url": "https://{region}.api.test/{base}", "variables": {
        "region": {"default": "eu", "enum": ["eu", "us"]}, "base": {"default": "v2"}}}]
    assert one(doc).service["address"] == "https://eu.api.test/v2"


def test_a_relative_server_is_read_against_the_documents_url_or_needs_base_url():
    doc = document({"/o": {"get": {"operationId": "o", "responses": OK}}})
    doc["servers"] = [{"url": "/api/v3"}]
    assert one(doc, document_url="http://docs.test/spec/openapi.yaml").service["address"] == "http://docs.test/api/v3"
    skipped = one(doc)
    assert skipped.service is None and "give base_url" in skipped.skipped
    assert one(doc, base_url="http://127.0.0.1:9/").service["address"] == "http://127.0.0.1:9/"


def test_an_operation_without_operation_id_is_named_from_method_and_path():
    result = one(document({"/pets/{id}/toys": {"get": {"responses": OK, "parameters": [
        {"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}]}}}), prefix="p.")
    assert result.name == "p.get-pets-id-toys" and result.operation_id is None
    assert any("no operationId" in warning for warning in result.warnings)


def test_names_that_collide_once_made_valid_are_told_apart():
    doc = document({"/a": {"get": {"operationId": "a b", "responses": OK}},
                    "/b": {"get": {"operationId": "a-b", "responses": OK}}})
    assert [operation.name for operation in openapi.convert(doc).operations] == ["a-b", "a-b-2"]


def test_head_options_and_trace_are_reported_skipped():
    result = one(document({"/o": {"head": {"operationId": "h", "responses": {"200": {"description": "ok"}}}}}))
    assert result.service is None and "HEAD is not a method" in result.skipped


# -- documents that cannot be imported --------------------------------------------------------


@pytest.mark.parametrize("change, where", [
    (lambda doc: doc["paths"]["/pets"]["get"].__setitem__("responses", "oops"), "paths./pets.get.responses"),
    (lambda doc: doc.__setitem__("openapi", "2.0"), "openapi"),
    (lambda doc: doc["paths"]["/pets/{id}"]["get"].__setitem__("parameters", []), "paths./pets/{id}.get"),
    (lambda doc: doc["paths"]["/pets"]["post"].__setitem__("operationId", "findPets"), "paths./pets.post"),
    (lambda doc: doc["paths"]["/pets"]["post"]["requestBody"]["content"]["application/json"].__setitem__(
        "schema", {"$ref": "#/components/schemas/Nope"}), "$ref"),
])
def test_a_document_that_does_not_validate_is_refused_naming_where(change, where):
    doc = petstore()
    change(doc)
    with pytest.raises(openapi.OpenAPIError) as caught:
        openapi.convert(doc)
    assert caught.value.errors["where"] == where, caught.value.message
    assert caught.value.message.startswith(f"the OpenAPI document does not validate at {where}: ")


@pytest.mark.parametrize("ref", ["file:///etc/passwd", "http://127.0.0.1:9/schema.json", "other.yaml#/Pet"])
def test_a_reference_outside_the_document_is_refused_before_anything_reads_it(ref):
    doc = petstore()
    doc["components"]["schemas"]["NewPet"]["properties"]["tag"] = {"$ref": ref}
    with pytest.raises(openapi.OpenAPIError) as caught:
        openapi.convert(doc)
    assert caught.value.errors["where"] == "components.schemas.NewPet.properties.tag.$ref"
    assert "root:" not in caught.value.message and "only references inside the document" in caught.value.message


def test_a_swagger_2_document_is_refused_saying_so():
    with pytest.raises(openapi.OpenAPIError, match="Swagger 2.0"):
        openapi.convert({"swagger": "2.0", "info": {"title": "t", "version": "1"}, "paths": {}})


def test_the_conversion_leaves_the_document_as_it_was():
    doc = petstore()
    before = copy.deepcopy(doc)
    openapi.convert(doc, prefix="x-")
    assert doc == before

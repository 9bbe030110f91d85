"""The static data-flow check and the plan it builds."""

import pytest

from machinery.exceptions import DataflowError
from machinery.language import dataflow
from tests.conftest import definition


def service(name, inputs, outputs):
    return {"name": name, "address": f"http://{name}.local/",
            "inputs": [{"name": k, "type": t} for k, t in inputs.items()],
            "outputs": [{"name": k, "type": t} for k, t in outputs.items()]}


@pytest.fixture
def examples():
    return {d["name"]: d for d in (definition("service-upper"), definition("service-reverse"),
                                   definition("service-space-counter"))}


def workflow(services, inputs, outputs, operations=()):
    return {"name": "w", "services": services,
            "inputs": [{"name": k, "type": t} for k, t in inputs.items()],
            "outputs": [{"name": k, "type": t} for k, t in outputs.items()],
            "operations": list(operations)}


def test_the_seed_example_checks_and_maps_the_count_to_space_count(examples):
    plan = dataflow.plan(definition("workflow-process-text"), examples)
    assert [step["service"]["name"] for step in plan["steps"]] == ["upper", "reverse", "space-counter"]
    assert plan["steps"][2]["outputs"] == {"message": "space_count"}
    assert plan["steps"][0]["inputs"] == {"message": "message"}


def test_the_seed_example_without_its_operation_fails_on_the_output_type(examples):
    broken = {**definition("workflow-process-text"), "operations": []}
    with pytest.raises(DataflowError) as raised:
        dataflow.plan(broken, examples)
    problems = raised.value.errors
    assert {p["field"] for p in problems} == {"message", "space_count"}
    assert any("never produced" in p["problem"] for p in problems)


def test_a_broken_chain_names_the_step_the_field_and_what_was_available():
    services = {"a": service("a", {"text": "string"}, {"count": "int"}),
                "b": service("b", {"words": "array"}, {"out": "string"})}
    with pytest.raises(DataflowError) as raised:
        dataflow.plan(workflow(["a", "b"], {"text": "string"}, {"out": "string"}), services)
    [problem] = raised.value.errors
    assert problem["step"] == 1 and problem["service"] == "b" and problem["field"] == "words"
    assert problem["available"] == {"text": "string", "count": "int"}
    assert "step 1 (b)" in raised.value.message


def test_a_type_mismatch_is_reported_with_both_types():
    services = {"a": service("a", {"n": "int"}, {})}
    with pytest.raises(DataflowError, match="expects int but context key 'n' is string"):
        dataflow.plan(workflow(["a"], {"n": "string"}, {}), services)


def test_int_feeds_float_but_not_the_other_way():
    services = {"a": service("a", {"x": "float"}, {"y": "float"})}
    dataflow.plan(workflow(["a"], {"x": "int"}, {"y": "number"}), services)
    with pytest.raises(DataflowError):
        dataflow.plan(workflow(["a"], {"x": "int"}, {"y": "int"}), services)


def test_input_renames_read_from_another_context_key():
    services = {"a": service("a", {"text": "string"}, {"n": "int"})}
    plan = dataflow.plan(workflow(["a"], {"message": "string"}, {"n": "int"},
                                  [{"service": "a", "inputs": {"text": "message"}}]), services)
    assert plan["steps"][0]["inputs"] == {"text": "message"}
    assert dataflow.step_inputs(plan["steps"][0], {"message": "hi"}) == {"text": "hi"}


def test_a_service_used_twice_with_a_rename_on_one_step(examples):
    flow = workflow(["upper", "reverse", "upper"], {"message": "string"},
                    {"message": "string", "shouted": "string"},
                    [{"service": "upper", "step": 0, "outputs": {"message": "shouted"}}])
    plan = dataflow.plan(flow, examples)
    assert plan["steps"][0]["outputs"] == {"message": "shouted"}
    assert plan["steps"][2]["outputs"] == {"message": "message"}


def test_an_operation_step_must_be_a_step_of_its_service(examples):
    flow = workflow(["upper", "reverse"], {"message": "string"}, {},
                    [{"service": "upper", "step": 1, "outputs": {"message": "x"}}])
    with pytest.raises(DataflowError, match="step 1 is not a step of service 'upper'"):
        dataflow.plan(flow, examples)


def test_an_operation_on_a_service_not_in_the_chain_is_rejected(examples):
    flow = workflow(["upper"], {"message": "string"}, {}, [{"service": "reverse", "outputs": {"message": "x"}}])
    with pytest.raises(DataflowError, match="not a step of this workflow"):
        dataflow.plan(flow, examples)


def test_renaming_a_field_the_service_does_not_declare_is_rejected(examples):
    flow = workflow(["upper"], {"message": "string"}, {}, [{"service": "upper", "outputs": {"nope": "x"}}])
    with pytest.raises(DataflowError, match="does not declare"):
        dataflow.plan(flow, examples)


def test_unknown_services_are_each_named(examples):
    with pytest.raises(DataflowError, match="unknown services: nope, other"):
        dataflow.plan(workflow(["upper", "nope", "other", "nope"], {"message": "string"}, {}), examples)


def test_outputs_land_in_the_context_under_their_renamed_keys(examples):
    plan = dataflow.plan(definition("workflow-process-text"), examples)
    context = {"message": "a b"}
    dataflow.apply_outputs(plan["steps"][2], {"message": 1, "ignored": True}, context)
    assert context == {"message": "a b", "space_count": 1}
    assert dataflow.workflow_outputs(plan, context) == {"message": "a b", "space_count": 1}


# -- version 2 types -----------------------------------------------------------------------------

LINE = {"type": "object", "fields": [{"name": "sku", "type": "string"}, {"name": "qty", "type": "int"}]}
ORDER = {"type": "object", "fields": [{"name": "total", "type": "float"},
                                      {"name": "lines", "type": {"type": "array", "items": LINE}}]}


def typed(name, inputs, outputs):
    return {"name": name, "address": f"http://{name}.local/", "inputs": inputs, "outputs": outputs}


def test_nested_types_feed_a_smaller_structure():
    wants_skus = {"type": "object", "fields": [
        {"name": "lines", "type": {"type": "array", "items": {"type": "object", "fields": [
            {"name": "sku", "type": "string"}]}}}]}
    services = {"orders": typed("orders", [{"name": "id", "type": "string"}], [{"name": "order", "type": ORDER}]),
                "pick": typed("pick", [{"name": "order", "type": wants_skus}], [{"name": "picked", "type": "int"}])}
    plan = dataflow.plan({"name": "w", "services": ["orders", "pick"], "inputs": [{"name": "id", "type": "string"}],
                          "outputs": [{"name": "picked", "type": "float"}]}, services)
    assert plan["steps"][1]["inputs"] == {"order": "order"}


def test_a_nested_mismatch_names_its_path_and_shows_the_available_types():
    wants = {"type": "object", "fields": [{"name": "lines", "type": {"type": "array", "items": {
        "type": "object", "fields": [{"name": "sku", "type": "int"}]}}}]}
    services = {"orders": typed("orders", [], [{"name": "order", "type": ORDER}]),
                "pick": typed("pick", [{"name": "order", "type": wants}], [])}
    with pytest.raises(DataflowError) as raised:
        dataflow.plan({"name": "w", "services": ["orders", "pick"], "inputs": [], "outputs": []}, services)
    [problem] = raised.value.errors
    assert problem["step"] == 1 and problem["field"] == "order"
    assert "(lines[].sku: expected int, got string)" in problem["problem"]
    assert problem["available"] == {
        "order": "object{total: float, lines: array<object{sku: string, qty: int}>}"}


def test_a_required_input_fed_from_an_optional_key_is_refused():
    services = {"a": typed("a", [{"name": "note", "type": "string"}], [])}
    flow = {"name": "w", "services": ["a"], "outputs": [],
            "inputs": [{"name": "note", "type": "string", "required": False}]}
    with pytest.raises(DataflowError, match="input 'note' is required but context key 'note' may be absent"):
        dataflow.plan(flow, services)
    services["a"]["inputs"][0]["required"] = False
    assert dataflow.plan(flow, services)["steps"][0]["inputs"] == {"note": "note"}


def test_an_optional_input_may_read_a_key_no_one_sets():
    services = {"a": typed("a", [{"name": "note", "type": "string", "required": False}], [])}
    plan = dataflow.plan({"name": "w", "services": ["a"], "inputs": [], "outputs": []}, services)
    assert dataflow.step_inputs(plan["steps"][0], {}) == {}


def test_a_nullable_output_does_not_feed_a_non_null_input():
    services = {"a": typed("a", [], [{"name": "n", "type": "int", "nullable": True}]),
                "b": typed("b", [{"name": "n", "type": "float"}], [])}
    with pytest.raises(DataflowError, match="may be null, but float may not"):
        dataflow.plan({"name": "w", "services": ["a", "b"], "inputs": [], "outputs": []}, services)


def test_an_optional_output_keeps_the_value_that_was_there():
    services = {"a": typed("a", [], [{"name": "n", "type": "int", "required": False}])}
    flow = {"name": "w", "services": ["a"], "inputs": [{"name": "n", "type": "int"}],
            "outputs": [{"name": "n", "type": "int"}]}
    dataflow.plan(flow, services)
    with pytest.raises(DataflowError, match="workflow output 'n' is required but may be absent"):
        dataflow.plan({**flow, "inputs": []}, services)


def test_a_missing_output_suggests_the_rename_that_fixes_it(examples):
    broken = {**definition("workflow-process-text"), "operations": []}
    with pytest.raises(DataflowError) as raised:
        dataflow.plan(broken, examples)
    [problem] = [p for p in raised.value.errors if p["field"] == "space_count"]
    rename = {"service": "space-counter", "outputs": {"message": "space_count"}}
    assert problem["suggestion"] == {"operations": [rename]}
    assert 'add {"service": "space-counter", "outputs": {"message": "space_count"}} to operations' in problem["problem"]
    fixed = {**broken, "operations": problem["suggestion"]["operations"]}
    assert dataflow.plan(fixed, examples)["steps"][2]["outputs"] == {"message": "space_count"}


def test_no_rename_is_suggested_when_no_output_fits(examples):
    flow = workflow(["upper"], {"message": "string"}, {"count": "int"})
    with pytest.raises(DataflowError) as raised:
        dataflow.plan(flow, examples)
    [problem] = raised.value.errors
    assert "never produced" in problem["problem"] and "suggestion" not in problem


def test_a_rename_that_would_break_a_later_step_is_not_suggested():
    # Renaming a's words to shout would starve b, which reads them.
    services = {"a": service("a", {"text": "string"}, {"words": "string"}),
                "b": service("b", {"words": "string"}, {"n": "int"})}
    with pytest.raises(DataflowError) as raised:
        dataflow.plan(workflow(["a", "b"], {"text": "string"}, {"shout": "string"}), services)
    [problem] = raised.value.errors
    assert "never produced" in problem["problem"] and "suggestion" not in problem
    services["b"]["outputs"].append({"name": "echo", "type": "string"})
    with pytest.raises(DataflowError) as raised:
        dataflow.plan(workflow(["a", "b"], {"text": "string"}, {"shout": "string"}), services)
    assert raised.value.errors[0]["suggestion"] == {"operations": [{"service": "b", "outputs": {"echo": "shout"}}]}


def test_the_plan_keeps_types_but_not_schemas():
    services = {"a": typed("a", [], [{"name": "n", "type": "int", "schema": '{"type":"integer"}'}])}
    plan = dataflow.plan({"name": "w", "services": ["a"], "inputs": [], "outputs": [{"name": "n", "type": "int"}]},
                         services)
    assert plan["steps"][0]["service"]["outputs"] == [{"name": "n", "type": "int"}]

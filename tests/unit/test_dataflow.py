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

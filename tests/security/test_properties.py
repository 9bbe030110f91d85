"""Hypothesis tests of the type checker and the data-flow check with random definitions."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from machinery import guard
from machinery.exceptions import DataflowError
from machinery.language import dataflow, types

TYPE_NAMES = st.sampled_from(types.TYPE_NAMES)
NAMES = st.sampled_from(["a", "b", "c", "message", "count"])
FIELDS = st.lists(st.fixed_dictionaries({"name": NAMES, "type": TYPE_NAMES}), max_size=4,
                  unique_by=lambda field: field["name"])
JSON = st.recursive(st.none() | st.booleans() | st.integers(-(2 ** 63), 2 ** 63 - 1)
                    | st.floats(allow_nan=False, allow_infinity=False) | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
                    max_leaves=10)
SERVICE_NAMES = ["s0", "s1", "s2"]
SERVICES = st.fixed_dictionaries({name: st.fixed_dictionaries({
    "name": st.just(name), "address": st.just("http://127.0.0.1:9/"), "inputs": FIELDS, "outputs": FIELDS})
    for name in SERVICE_NAMES})
OPERATIONS = st.lists(st.fixed_dictionaries(
    {"service": st.sampled_from([*SERVICE_NAMES, "ghost"])},
    optional={"step": st.integers(0, 5), "inputs": st.dictionaries(NAMES, NAMES, max_size=2),
              "outputs": st.dictionaries(NAMES, NAMES, max_size=2)}), max_size=3)
WORKFLOWS = st.fixed_dictionaries({
    "name": st.just("w"), "services": st.lists(st.sampled_from([*SERVICE_NAMES, "ghost"]), min_size=1, max_size=5),
    "inputs": FIELDS, "outputs": FIELDS, "operations": OPERATIONS})


@given(TYPE_NAMES, TYPE_NAMES)
def test_compatibility_is_reflexive_and_any_is_universal(produced, wanted):
    assert types.compatible(produced, produced)
    assert types.compatible("any", wanted) and types.compatible(produced, "any")


@given(JSON, TYPE_NAMES)
def test_a_value_matching_a_type_also_matches_every_type_it_is_compatible_with(value, type_name):
    # `any` is dynamic: compatible with every type by design, so it promises nothing about the value.
    for other in types.TYPE_NAMES:
        if types.canonical(type_name) == "any" or types.canonical(other) == "any":
            continue
        if types.matches(value, type_name) and types.compatible(type_name, other):
            assert types.matches(value, other)


@given(st.dictionaries(NAMES, JSON, max_size=5), FIELDS)
def test_check_names_exactly_the_fields_missing_or_mistyped(data, fields):
    problems = types.check(data, fields)
    for field in fields:
        ok = field["name"] in data and types.matches(data[field["name"]], field["type"])
        assert (field["name"] in problems) != ok


@settings(max_examples=300)
@given(WORKFLOWS, SERVICES)
def test_plan_either_feeds_every_input_with_a_compatible_type_or_raises_dataflow_error(workflow, services):
    registered = {name: service for name, service in services.items()}
    try:
        plan = dataflow.plan(workflow, registered)
    except DataflowError as error:
        assert error.errors, "a rejection lists its problems"
        return
    context = {field["name"]: types.canonical(field["type"]) for field in workflow["inputs"]}
    for step in plan["steps"]:
        service = step["service"]
        for field in service["inputs"]:
            key = step["inputs"][field["name"]]
            assert key in context
            assert types.compatible(context[key], field["type"])
        for field in service["outputs"]:
            context[step["outputs"][field["name"]]] = types.canonical(field["type"])
    for field in workflow["outputs"]:
        assert types.compatible(context[field["name"]], field["type"])


@given(JSON)
def test_storable_problems_never_raises_and_plain_json_is_storable(value):
    problems = guard.storable_problems(value)
    assert isinstance(problems, list)
    if not problems:
        assert not _has_operator_key(value)


def _has_operator_key(value) -> bool:
    if isinstance(value, dict):
        return any(key.startswith("$") or "." in key or "\x00" in key or _has_operator_key(child)
                   for key, child in value.items())
    if isinstance(value, list):
        return any(_has_operator_key(child) for child in value)
    return False


# Structured types without `any` or bare object/array (those are gradual: they promise nothing).
SCALARS = st.sampled_from(["string", "int", "float", "bool"])
ENUMS = st.one_of(st.fixed_dictionaries({"type": st.just("string"), "enum": st.lists(
                      st.sampled_from(["a", "b", "c"]), min_size=1, max_size=3, unique=True)}),
                  st.fixed_dictionaries({"type": st.sampled_from(["int", "float"]), "enum": st.lists(
                      st.integers(0, 3), min_size=1, max_size=3, unique=True)}))
LEAVES = st.one_of(SCALARS, ENUMS, st.fixed_dictionaries({"type": SCALARS, "nullable": st.booleans()}))


def structures(optional_fields):
    extra = {"required": st.booleans()} if optional_fields else {}
    return st.recursive(LEAVES, lambda inner: st.one_of(
        st.fixed_dictionaries({"type": st.just("array"), "items": inner}),
        st.fixed_dictionaries({"type": st.just("object"), "fields": st.lists(st.fixed_dictionaries(
            {"name": NAMES, "type": inner}, optional=extra), max_size=3,
            unique_by=lambda field: field["name"])})), max_leaves=6)


# An object that does not declare a key says nothing of it, so an optional field the producer does
# not declare is gradual, as `any` is: soundness is a property of the required fields.
STRUCTURES = structures(optional_fields=False)
VALUES = st.recursive(st.none() | st.booleans() | st.integers(-3, 3) | st.floats(-2, 2)
                      | st.sampled_from(["a", "b", "z"]),
                      lambda inner: st.lists(inner, max_size=3) | st.dictionaries(NAMES, inner, max_size=4),
                      max_leaves=10)


@settings(max_examples=300)
@given(VALUES, STRUCTURES, STRUCTURES)
def test_subtyping_is_sound_for_structured_types(value, produced, wanted):
    if types.matches(value, produced) and types.compatible(produced, wanted):
        assert types.matches(value, wanted), types.check_value(value, wanted, "value")


@given(structures(optional_fields=True))
def test_a_structured_type_fits_itself_and_survives_compacting(spec):
    normal = types.parse_type(spec)
    assert types.compatible(spec, spec)
    assert types.parse_type(types.compact(normal)) == normal

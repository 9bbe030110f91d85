"""The type system: names, aliases, compatibility, and checking data."""

import pytest

from machinery.language import types


@pytest.mark.parametrize("alias, name", [
    ("string", "string"), ("int", "int"), ("integer", "int"), ("float", "float"), ("number", "float"),
    ("bool", "bool"), ("boolean", "bool"), ("object", "object"), ("array", "array"), ("list", "array"),
    ("any", "any"), ("INT", "int"),
])
def test_aliases_resolve_to_canonical_names(alias, name):
    assert types.canonical(alias) == name


@pytest.mark.parametrize("bad", ["strin", "", "map", None, 3])
def test_unknown_type_names_are_rejected_with_the_known_ones(bad):
    with pytest.raises(ValueError, match="unknown type.*known types: any"):
        types.canonical(bad)


@pytest.mark.parametrize("produced, wanted, ok", [
    ("int", "float", True), ("float", "int", False), ("string", "any", True), ("any", "int", True),
    ("integer", "int", True), ("bool", "int", False), ("list", "array", True), ("object", "array", False),
])
def test_compatibility(produced, wanted, ok):
    assert types.compatible(produced, wanted) is ok


@pytest.mark.parametrize("value, type_name, ok", [
    ("x", "string", True), (1, "string", False), (1, "int", True), (True, "int", False),
    (1.5, "int", False), (1, "float", True), (1.5, "float", True), (True, "float", False),
    (True, "bool", True), (0, "bool", False), ({}, "object", True), ([], "object", False),
    ([], "array", True), (None, "any", True), (None, "string", False),
])
def test_values_match_their_declared_type(value, type_name, ok):
    assert types.matches(value, type_name) is ok


def test_check_names_each_missing_and_mistyped_field():
    fields = [{"name": "message", "type": "string"}, {"name": "count", "type": "int"},
              {"name": "ratio", "type": "float"}]
    problems = types.check({"count": "3", "ratio": 2, "extra": 1}, fields)
    assert problems == {"message": "missing (expected string)", "count": "expected int, got string"}


# -- type specs ------------------------------------------------------------------------------

LINES = {"type": "array", "items": {"type": "object", "fields": [
    {"name": "sku", "type": "string"}, {"name": "qty", "type": "int"},
    {"name": "note", "type": "string", "required": False}]}}


@pytest.mark.parametrize("spec, shown", [
    ("str", "string"),
    (LINES, "array<object{sku: string, qty: int, note: string?}>"),
    ({"type": "list", "items": "number"}, "array<float>"),
    ({"type": "object", "fields": []}, "object{}"),
    ({"type": "string", "nullable": True}, "string?"),
    ({"type": "string", "enum": ["a", "b"]}, '"a"|"b"'),
    ({"type": "int", "enum": [1, 2], "nullable": True}, "(1|2)?"),
    ({"type": "object", "fields": [{"name": "odd key", "type": "any"}]}, 'object{"odd key": any}'),
])
def test_a_type_is_described_briefly(spec, shown):
    assert types.describe(spec) == shown


def test_an_optional_field_or_context_entry_is_described_with_a_question_mark():
    assert types.describe({"name": "note", "type": "string", "required": False}) == "string?"
    assert types.describe({"type": types.parse_type("int"), "required": False}) == "int?"


def test_parsing_is_idempotent_and_compact_gives_back_the_short_spec():
    normal = types.parse_type(LINES)
    assert types.parse_type(normal) == normal
    assert types.compact(normal) == {"type": "array", "items": {"type": "object", "fields": [
        {"name": "sku", "type": "string"}, {"name": "qty", "type": "int"},
        {"name": "note", "type": "string", "required": False}]}}
    assert types.compact(types.parse_type("integer")) == "int"


@pytest.mark.parametrize("spec, where, problem", [
    ({"type": "array", "items": "strin"}, "type.items", "unknown type 'strin'"),
    ({"type": "arr"}, "type.type", "unknown type 'arr'"),
    ({"items": "int"}, "type", "missing 'type'"),
    (3, "type", "must be a type name or an object"),
    ({"type": "string", "items": "int"}, "type.items", "only an array has items"),
    ({"type": "array", "fields": []}, "type.fields", "only an object has fields"),
    ({"type": "array", "item": "int"}, "type", "unknown key item"),
    ({"type": "object", "fields": [{"name": "a", "type": {"type": "object", "fields": [{"name": "b"}]}}]},
     "type.fields[0].type.fields[0]", "needs a 'type'"),
    ({"type": "object", "fields": [{"name": "a", "type": "int"}, {"name": "a", "type": "int"}]},
     "type.fields[1].name", "declared twice"),
    ({"type": "object", "fields": [{"name": "", "type": "int"}]}, "type.fields[0].name", "1 to 100 characters"),
    ({"type": "object", "fields": [{"name": "a", "type": "int", "required": "no"}]},
     "type.fields[0].required", "true or false"),
    ({"type": "object", "fields": [{"name": "a", "type": "int", "from": "body"}]}, "type.fields[0]",
     "unknown key from"),
    ({"type": "object", "fields": "a"}, "type.fields", "must be a list of fields"),
    ({"type": "string", "enum": [1]}, "type.enum[0]", "1 is not a string"),
    ({"type": "string", "enum": []}, "type.enum", "non-empty list"),
    ({"type": "string", "enum": ["a", "a"]}, "type.enum[1]", "listed twice"),
    ({"type": "string", "enum": [None]}, "type.enum[0]", "nullable"),
    ({"type": "string", "nullable": "yes"}, "type.nullable", "true or false"),
])
def test_a_bad_type_spec_names_the_path_inside_the_type(spec, where, problem):
    with pytest.raises(types.TypeSpecError) as raised:
        types.parse_type(spec, "type")
    assert raised.value.path == where and problem in raised.value.problem


def nested(depth):
    spec = "int"
    for _ in range(depth - 1):
        spec = {"type": "array", "items": spec}
    return spec


def test_nesting_is_bounded():
    types.parse_type(nested(types.MAX_DEPTH))
    with pytest.raises(types.TypeSpecError, match=f"nested deeper than {types.MAX_DEPTH} levels"):
        types.parse_type(nested(types.MAX_DEPTH + 1))


def test_the_fields_of_one_object_are_bounded():
    fields = [{"name": f"f{n}", "type": "int"} for n in range(types.MAX_FIELDS + 1)]
    with pytest.raises(types.TypeSpecError, match=f"more than {types.MAX_FIELDS} fields"):
        types.parse_type({"type": "object", "fields": fields})


def test_a_field_may_give_a_schema_and_keeps_it_beside_the_converted_type():
    stored, warnings = types.load_field({"name": "n", "schema": {"type": ["integer", "null"]}})
    assert stored == {"name": "n", "schema": {"type": ["integer", "null"]}, "type": {"type": "int", "nullable": True}}
    assert warnings == []
    again, _ = types.load_field(stored)
    assert again == stored


def test_a_type_that_disagrees_with_the_schema_beside_it_is_refused():
    with pytest.raises(types.TypeSpecError, match="disagrees with the field's schema, which gives int"):
        types.load_field({"name": "n", "schema": {"type": "integer"}, "type": "string"})


# -- JSON Schema ---------------------------------------------------------------------------------

@pytest.mark.parametrize("schema, spec", [
    ({}, "any"),
    (True, "any"),
    ({"type": "string", "format": "date-time", "minLength": 1}, "string"),
    ({"type": "integer"}, "int"),
    ({"type": "number"}, "float"),
    ({"type": "boolean"}, "bool"),
    ({"type": "object"}, "object"),
    ({"type": "array"}, "array"),
    ({"type": "array", "items": {"type": "string"}}, {"type": "array", "items": "string"}),
    ({"type": "string", "nullable": True}, {"type": "string", "nullable": True}),            # OpenAPI 3.0
    ({"type": ["string", "null"]}, {"type": "string", "nullable": True}),                     # OpenAPI 3.1
    ({"type": ["integer", "number"]}, "float"),
    ({"anyOf": [{"type": "integer"}, {"type": "null"}]}, {"type": "int", "nullable": True}),
    ({"oneOf": [{"type": "null"}, {"$ref": "#/$defs/s"}], "$defs": {"s": {"type": "string"}}},
     {"type": "string", "nullable": True}),
    ({"enum": ["a", "b"]}, {"type": "string", "enum": ["a", "b"]}),
    ({"type": "string", "enum": ["a", None]}, {"type": "string", "enum": ["a"], "nullable": True}),
    ({"const": 3}, {"type": "int", "enum": [3]}),
    ({"properties": {"a": {"type": "string", "description": "the a"}, "b": {"type": "integer"}}, "required": ["a"]},
     {"type": "object", "fields": [{"name": "a", "type": "string", "description": "the a"},
                                   {"name": "b", "type": "int", "required": False}]}),
    ({"allOf": [{"$ref": "#/$defs/base"}, {"properties": {"b": {"type": "integer"}}, "required": ["b"]}],
      "$defs": {"base": {"type": "object", "properties": {"a": {"type": "string"}}}}},
     {"type": "object", "fields": [{"name": "a", "type": "string", "required": False},
                                   {"name": "b", "type": "int"}]}),
    ({"allOf": [{"type": "string"}]}, "string"),
    ({"type": "object", "properties": {"a": {"type": "string"}},
      "oneOf": [{"required": ["a"]}, {"required": ["b"]}]},
     {"type": "object", "fields": [{"name": "a", "type": "string", "required": False}]}),
])
def test_json_schema_converts_to_the_same_model(schema, spec):
    converted, warnings = types.from_json_schema(schema)
    assert (converted, warnings) == (spec, [])
    types.parse_type(converted)


@pytest.mark.parametrize("schema, spec, warning", [
    ({"oneOf": [{"type": "string"}, {"type": "integer"}]}, "any", "schema.oneOf: 'oneOf' of several types"),
    ({"type": ["string", "integer"]}, "any", "schema: several types (string, integer) became any"),
    ({"type": "null"}, "any", "schema: only null"),
    ({"$ref": "other.json#/x"}, "any", "schema: $ref 'other.json#/x' is outside this document"),
    ({"$ref": "#/nowhere"}, "any", "points at nothing"),
    ({"$ref": "#anchor"}, "any", "names an anchor"),
    ({"type": "object", "properties": {"a": {"type": "array", "items": [{"type": "string"}]}}},
     {"type": "object", "fields": [{"name": "a", "type": "array", "required": False}]},
     "schema.properties.a.items: a tuple of items"),
    ({"type": "object", "additionalProperties": {"type": "string"}}, "object",
     "schema.additionalProperties: the values of a map are not typed"),
    ({"allOf": [{"type": "string"}, {"type": "integer"}]}, "any", "schema.allOf: 'allOf' of several types"),
    ({"type": "string", "not": {"enum": ["x"]}}, "string", "schema: 'not' is not checked"),
    (False, "any", "schema: not a schema"),
    ({"type": "date"}, "any", "unknown type 'date'"),
])
def test_what_the_model_cannot_say_becomes_any_with_a_warning_naming_the_path(schema, spec, warning):
    converted, warnings = types.from_json_schema(schema)
    assert converted == spec
    assert any(warning in text for text in warnings), warnings


def test_a_recursive_schema_becomes_any_where_it_recurs():
    document = {"$defs": {"node": {"type": "object", "required": ["value"], "properties": {
        "value": {"type": "integer"}, "next": {"$ref": "#/$defs/node"}}}}}
    converted, warnings = types.from_json_schema({"$ref": "#/$defs/node"}, document)
    assert converted == {"type": "object", "fields": [{"name": "value", "type": "int"},
                                                      {"name": "next", "type": "any", "required": False}]}
    assert warnings == ["schema.properties.next: $ref '#/$defs/node' refers to itself; the recursion became any here"]


def test_refs_that_multiply_are_bounded():
    # Each level refers to the next one twice: 2**40 types if expanded.
    defs = {f"l{n}": {"type": "object", "properties": {"a": {"$ref": f"#/$defs/l{n + 1}"},
                                                       "b": {"$ref": f"#/$defs/l{n + 1}"}}} for n in range(40)}
    defs["l40"] = {"type": "string"}
    converted, warnings = types.from_json_schema({"$ref": "#/$defs/l0", "$defs": defs})
    types.parse_type(converted)
    assert len(warnings) == types.MAX_WARNINGS + 1 and warnings[-1].endswith("more warnings")


def test_deep_schemas_become_any_past_the_depth_bound():
    schema = {"type": "string"}
    for _ in range(types.MAX_DEPTH + 3):
        schema = {"type": "array", "items": schema}
    converted, warnings = types.from_json_schema(schema)
    types.parse_type(converted)
    assert any(f"nested deeper than {types.MAX_DEPTH} levels" in text for text in warnings)


def test_openapi_refs_point_into_the_whole_document():
    document = {"openapi": "3.0.3", "components": {"schemas": {"Pet": {
        "type": "object", "required": ["name"], "properties": {"name": {"type": "string"},
                                                              "tag": {"type": "string", "nullable": True}}}}}}
    converted, warnings = types.from_json_schema({"type": "array", "items": {"$ref": "#/components/schemas/Pet"}},
                                                 document, path="responses.200")
    assert types.describe(converted) == "array<object{name: string, tag: string?}>"
    assert warnings == []


# -- subtyping -------------------------------------------------------------------------------------

def obj(*fields):
    return {"type": "object", "fields": [dict(field) for field in fields]}


def f(name, spec, **modifiers):
    return {"name": name, "type": spec, **modifiers}


def arr(items):
    return {"type": "array", "items": items}


SKU = f("sku", "string")
QTY = f("qty", "int")


@pytest.mark.parametrize("produced, wanted, ok", [
    (obj(SKU, QTY), obj(SKU), True),                                     # extra fields fit
    (obj(SKU), obj(SKU, QTY), False),                                    # a missing required field does not
    (obj(SKU), obj(SKU, f("qty", "int", required=False)), True),         # a missing optional field does
    (obj(f("sku", "string", required=False)), obj(SKU), False),          # optional does not fit required
    (obj(SKU), obj(f("sku", "string", required=False)), True),           # required fits optional
    (arr(obj(SKU, QTY)), arr(obj(SKU)), True),                           # arrays are covariant
    (arr(obj(SKU)), arr(obj(SKU, QTY)), False),
    (arr("int"), arr("float"), True),                                    # int fits float, inside too
    (arr("float"), arr("int"), False),
    ({"type": "string", "nullable": True}, "string", False),             # nullable does not fit non-null
    ("string", {"type": "string", "nullable": True}, True),              # non-null fits nullable
    ({"type": "string", "enum": ["a"]}, {"type": "string", "enum": ["a", "b"]}, True),
    ({"type": "string", "enum": ["a", "c"]}, {"type": "string", "enum": ["a", "b"]}, False),
    ("string", {"type": "string", "enum": ["a"]}, False),                # any string is not a smaller enum
    ({"type": "string", "enum": ["a"]}, "string", True),
    ({"type": "int", "enum": [1, 2]}, {"type": "float", "enum": [1.0, 2.0, 2.5]}, True),
    ({"type": "bool", "enum": [True]}, {"type": "int", "enum": [1]}, False),
    ("any", obj(SKU), True),                                             # any fits everything
    (obj(SKU), "any", True),                                             # and everything fits any
    ({"type": "string", "nullable": True}, "any", True),
    (obj(SKU), "object", True),                                          # fields fit a bare object
    ("object", obj(SKU), True),                                          # a bare object holds anything
    (arr("int"), "array", True),
    ("array", arr("int"), True),
    (arr("int"), "object", False),
    (obj(f("order", obj(f("lines", arr(obj(SKU, QTY)))))), obj(f("order", obj(f("lines", arr(obj(SKU)))))), True),
    (obj(f("order", obj(f("lines", arr(obj(f("sku", "int"))))))), obj(f("order", obj(f("lines", arr(obj(SKU)))))),
     False),
])
def test_the_subtyping_table(produced, wanted, ok):
    assert types.compatible(produced, wanted) is ok
    assert (types.incompatibilities(produced, wanted) == []) is ok


@pytest.mark.parametrize("produced, wanted, problems", [
    (obj(f("order", obj(f("lines", arr(obj(f("sku", "int"))))))), obj(f("order", obj(f("lines", arr(obj(SKU)))))),
     ["order.lines[].sku: expected string, got int"]),
    (obj(SKU), obj(SKU, QTY), ["qty: missing (expected int)"]),
    (obj(f("sku", "string", required=False)), obj(SKU), ["sku: optional, but required here"]),
    ({"type": "string", "nullable": True}, "string", ["may be null, but string may not"]),
    ({"type": "string", "enum": ["a", "c"]}, {"type": "string", "enum": ["a", "b"]}, ['"c" is not among "a", "b"']),
    (arr("string"), arr("int"), ["[]: expected int, got string"]),
])
def test_incompatibilities_name_their_paths(produced, wanted, problems):
    assert types.incompatibilities(produced, wanted) == problems


# -- runtime checks ------------------------------------------------------------------------------

STATUS = {"type": "string", "enum": ["open", "paid"]}
ORDER = [f("order", obj(f("total", "float"), f("lines", LINES), f("status", STATUS),
                        f("coupon", "string", nullable=True)))]


def order(**changes):
    value = {"total": 12.5, "lines": [{"sku": f"s{n}", "qty": 1} for n in range(5)], "status": "open", "coupon": None}
    value.update(changes)
    return {"order": value}


@pytest.mark.parametrize("data, problems", [
    (order(), {}),
    (order(lines=[{"sku": "a", "qty": 1}] * 3 + [{"sku": 4, "qty": 1}]),
     {"order.lines[3].sku": "expected string, got int"}),
    (order(lines=[{"qty": 1}]), {"order.lines[0].sku": "missing (expected string)"}),
    (order(lines=[{"sku": "a", "qty": 1, "note": None}]), {"order.lines[0].note": "expected string, got null"}),
    (order(lines=[{"sku": "a", "qty": 1, "note": "ok", "extra": {}}]), {}),
    (order(status="lost"), {"order.status": 'expected one of "open", "paid", got "lost"'}),
    (order(total=None), {"order.total": "expected float, got null"}),
    (order(coupon="SAVE"), {}),
    (order(lines={}), {"order.lines": "expected array, got object"}),
    ({"order": []}, {"order": "expected object, got array"}),
    ({}, {"order": "missing (expected object{total: float, lines: array<object{sku: string, qty: int, note: string?}>, "
                   'status: "open"|"paid", coupon: string?})'}),
])
def test_check_names_the_path_of_each_problem(data, problems):
    assert types.check(data, ORDER) == problems
    assert types.compile_fields(ORDER)(data) == problems


def test_absent_optional_fields_are_fine_and_nullable_ones_take_null():
    fields = [f("a", "string", required=False), f("b", "int", nullable=True)]
    assert types.check({"b": None}, fields) == {}
    assert types.check({"a": None, "b": 1}, fields) == {"a": "expected string, got null"}
    assert types.check({}, fields) == {"b": "missing (expected int?)"}


def test_a_check_reports_a_bounded_number_of_problems():
    problems = types.check({"lines": [{"sku": n, "qty": 1} for n in range(10_000)]}, [f("lines", LINES)])
    assert len(problems) == types.MAX_PROBLEMS + 1
    assert problems["…"] == f"more problems than the first {types.MAX_PROBLEMS}"


def test_check_value_names_paths_under_a_given_root():
    assert types.check_value([1, "x"], arr("int"), "ids") == {"ids[1]": "expected int, got string"}
    assert types.matches({"sku": "a"}, obj(SKU)) and not types.matches({"sku": 1}, obj(SKU))


def test_odd_field_names_are_quoted_in_paths():
    fields = [f("o", obj(f("a b", "int")))]
    assert types.check({"o": {"a b": "x"}}, fields) == {'o["a b"]': "expected int, got string"}


@pytest.mark.parametrize("spec", ["string", "int", "float", "bool", "object", "array", LINES,
                                  {"type": "string", "enum": ["b", "a"]}, {"type": "int", "nullable": True}])
def test_an_example_value_matches_its_type(spec):
    assert types.matches(types.example(spec), spec)


@pytest.mark.parametrize("keyword", ["anyOf", "allOf"])
def test_unions_nested_without_bound_become_any(keyword):
    schema = {"type": "string"}
    for _ in range(2000):
        schema = {keyword: [schema, {"type": "null"}]} if keyword == "anyOf" else {keyword: [schema]}
    converted, warnings = types.from_json_schema(schema)
    types.parse_type(converted)
    assert any(f"nested more than {types.MAX_LEVELS} levels" in text for text in warnings)


def test_a_chain_of_refs_is_bounded():
    defs = {f"r{n}": {"$ref": f"#/$defs/r{n + 1}"} for n in range(3000)}
    defs["r3000"] = {"type": "string"}
    converted, warnings = types.from_json_schema({"anyOf": [{"$ref": "#/$defs/r0"}, {"type": "null"}], "$defs": defs})
    assert converted == "any" and warnings


def test_warnings_are_bounded():
    schema = {"type": "object", "properties": {f"p{n}": {"type": ["string", "integer"]} for n in range(150)}}
    _, warnings = types.from_json_schema(schema)
    assert len(warnings) == types.MAX_WARNINGS + 1 and warnings[-1] == "schema: and 100 more warnings"

"""JMESPath expressions of the step tree: compiled once, their result types inferred over a context."""

import pytest

from machinery.language import types
from machinery.language.expressions import ExpressionError, compile_expression, infer

ORDER = {"type": "object", "fields": [
    {"name": "id", "type": "string"},
    {"name": "total", "type": "float"},
    {"name": "note", "type": "string", "required": False},
    {"name": "lines", "type": {"type": "array", "items": {"type": "object", "fields": [
        {"name": "sku", "type": "string"}, {"name": "qty", "type": "int"}]}}},
]}
CONTEXT = {
    "order": {"type": types.parse_type(ORDER), "required": True},
    "tags": {"type": types.parse_type({"type": "array", "items": "string"}), "required": True},
    "matrix": {"type": types.parse_type({"type": "array", "items": {"type": "array", "items": "int"}}),
               "required": True},
    "payload": {"type": types.parse_type("any"), "required": True},
    "bag": {"type": types.parse_type("object"), "required": True},
    "count": {"type": types.parse_type("int"), "required": True},
    "maybe": {"type": types.parse_type("int"), "required": False},
    "name": {"type": types.parse_type("string"), "required": True},
    "flag": {"type": types.parse_type("bool"), "required": True},
}


def shown(text):
    result, problems = infer(compile_expression(text), CONTEXT)
    assert problems == [], problems
    return types.describe(result)


def problems_of(text):
    result, problems = infer(compile_expression(text), CONTEXT)
    return problems


@pytest.mark.parametrize(("text", "expected"), [
    ("order.id", "string"),
    ("order.total", "float"),
    ("order.note", "string?"),
    ("maybe", "int?"),
    ("order.lines", "array<object{sku: string, qty: int}>"),
    ("order.lines[0]", "object{sku: string, qty: int}?"),
    ("order.lines[0].qty", "int?"),
    ("order.lines[1:]", "array<object{sku: string, qty: int}>"),
    ("order.lines[*].sku", "array<string>"),
    ("order.lines[?qty > `1`].sku", "array<string>"),
    ("matrix[]", "array<int>"),
    ("order.lines | length(@)", "int"),
    ("@.count", "int"),
    ("`3`", "int"),
    ("'text'", '"text"'),  # a literal is exactly its value (an enum of one)
    ("`true`", "bool"),
    ("[order.id, name]", "array<string>"),
    ("{total: order.total, who: name}", "object{total: float, who: string}"),
    ("order.total > `500`", "bool"),
    ("name == 'x'", "bool"),
    ("order.id < name", "bool"),
    ("flag && count > `1`", "bool"),
    ("!count", "bool"),
    ("flag || name", "any"),
    ("length(tags)", "int"),
    ("contains(tags, 'x')", "bool"),
    ("starts_with(name, 'a')", "bool"),
    ("to_string(count)", "string"),
    ("join(',', tags)", "string"),
    ("type(payload)", "string"),
    ("sum(order.lines[*].qty)", "int"),
    ("avg(order.lines[*].qty)", "float?"),
    ("keys(bag)", "array<string>"),
    ("max(order.lines[*].qty)", "int?"),
    ("abs(count)", "int"),
    ("floor(order.total)", "int"),
    ("sort(tags)", "array<string>"),
    ("reverse(tags)", "array<string>"),
    ("not_null(name, order.id)", "string"),
    ("not_null(order.note, name)", "string"),
    ("not_null(order.note, maybe)", "any"),
    ("not_null(order.note, order.note)", "string?"),
    ("order.note || 'none'", "string"),
    ("order.note || order.note", "string?"),
    ("maybe || count", "int"),
    ("count || maybe", "int?"),
    ("merge(bag, order)", "object"),
    ("sort_by(order.lines, &qty)", "array<object{sku: string, qty: int}>"),
    ("map(&sku, order.lines)", "array<string>"),
    ("payload.anything.at[0].all", "any"),
    ("bag.whatever", "any"),
])
def test_the_type_of_each_form(text, expected):
    assert shown(text) == expected


def test_a_field_missing_from_a_known_object_names_the_path_and_the_fields_it_has():
    assert problems_of("order.totl") == ["order.totl: no field 'totl'; order has id, total, note, lines"]


def test_a_key_missing_from_the_context_names_what_the_context_has():
    [problem] = problems_of("ordr.total")
    assert problem.startswith("ordr: no field 'ordr'; the context has order, tags")


def test_a_field_inside_a_projection_is_checked_against_the_item_type():
    assert problems_of("order.lines[*].skuu") == ["order.lines[].skuu: no field 'skuu'; order.lines[] has sku, qty"]


def test_a_filter_condition_is_checked_against_the_item_type():
    assert problems_of("order.lines[?qtty > `1`]") == [
        "order.lines[].qtty: no field 'qtty'; order.lines[] has sku, qty"]


def test_a_field_of_a_scalar_is_refused():
    assert problems_of("order.id.length") == ["order.id.length: order.id is string, which has no fields"]


def test_projecting_what_is_not_an_array_is_refused():
    [problem] = problems_of("order.id[*]")
    assert "order.id is string, not an array" in problem


def test_ordering_compares_only_numbers_with_numbers_or_strings_with_strings():
    [problem] = problems_of("order.total > name")
    assert problem.startswith("order.total > name: compares float with string")
    [problem] = problems_of("flag < `1`")
    assert "compares bool with int" in problem
    assert problems_of("count <= order.total") == []
    assert problems_of("payload > `1`") == []
    assert problems_of("name == count") == []  # equality compares anything


@pytest.mark.parametrize(("text", "message"), [
    ("order.", "column 7"),
    ("order[?", "does not parse"),
    ("nope(order)", "unknown function nope()"),
    ("length(tags, name)", "length() takes 1 argument, got 2"),
    ("starts_with(name)", "starts_with() takes 2 arguments, got 1"),
    ("merge()", "merge() takes at least 1 argument, got 0"),
    ("", "may not be empty"),
    ("a" * 2001, "at most 2000 characters"),
])
def test_what_does_not_compile_is_an_expression_error_that_says_where(text, message):
    with pytest.raises(ExpressionError) as caught:
        compile_expression(text)
    assert message in str(caught.value)


@pytest.mark.parametrize("value", [5, None, {"a": 1}, ["a"], True])
def test_an_expression_that_is_not_a_string_is_an_expression_error(value):
    with pytest.raises(ExpressionError, match="is a string of JMESPath"):
        compile_expression(value)


def test_deep_nesting_is_an_error_not_a_crash():
    with pytest.raises(ExpressionError):
        compile_expression("(" * 990 + "a" + ")" * 990)


def test_infer_over_source_text_reports_a_syntax_error_as_a_problem():
    result, problems = infer("order.", CONTEXT)
    assert result["type"] == "any" and "does not parse" in problems[0]


def test_an_expression_is_compiled_once_and_searches_values():
    first = compile_expression("order.lines[?qty > `1`].sku")
    assert compile_expression("order.lines[?qty > `1`].sku") is first
    order = {"order": {"lines": [{"sku": "a", "qty": 1}, {"sku": "b", "qty": 2}]}}
    assert first.search(order) == ["b"]
    assert first.parsed["type"] == "filter_projection"


def test_a_function_failing_at_run_time_is_an_expression_error():
    with pytest.raises(ExpressionError, match="length"):
        compile_expression("length(count)").search({"count": 3})


def test_a_string_literal_fits_an_input_that_takes_only_some_strings():
    literal, _ = infer(compile_expression("'mail'"), {})
    wanted = types.parse_type({"type": "string", "enum": ["mail", "sms"]})
    assert types.incompatibilities(literal, wanted) == []
    other, _ = infer(compile_expression("'fax'"), {})
    assert types.incompatibilities(other, wanted)


@pytest.mark.parametrize("text", ["item", "a.b", "a.b.c", '"x y".z', "a", "a[0]", "a.b[*]", "length(a)"])
@pytest.mark.parametrize("value", [{"item": "x", "a": {"b": {"c": 1}}}, {"a": [1, {"b": 2}]}, {"a": None},
                                   {"a": "text"}, {"x y": {"z": True}}, [], None, "a", {"a": {"b": [1, 2]}}])
def test_a_field_only_expression_answers_what_jmespath_answers(text, value):
    import jmespath

    try:
        expected = jmespath.search(text, value)
    except jmespath.exceptions.JMESPathError:
        with pytest.raises(ExpressionError):
            compile_expression(text).search(value)
        return
    assert compile_expression(text).search(value) == expected

"""The check of a step tree, called directly: every kind and every join rule, what the plan infers, each
refusal with its step, path and problem, the limits, and version 1 as the short form of the tree."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import jmespath.functions
import pytest
import yaml

from machinery.exceptions import DataflowError
from machinery.language import dataflow, types
from machinery.language import plan as planner
from machinery.language.plan import MAX_DEPTH, MAX_STEPS, final_context, fingerprint, normalise, plan_tree

INT = {"name": "n", "type": "int"}
TEXT = {"name": "message", "type": "string"}
FLAG = {"name": "flag", "type": "bool"}
ORDER = {"name": "order", "type": {"type": "object", "fields": [
    {"name": "id", "type": "string"}, {"name": "total", "type": "float"},
    {"name": "lines", "type": {"type": "array", "items": {"type": "object", "fields": [
        {"name": "sku", "type": "string"}, {"name": "qty", "type": "int"}]}}}]}}


def service(name, inputs, outputs):
    return {"name": name, "address": f"http://{name}.local/", "inputs": inputs, "outputs": outputs}


SERVICES = {item["name"]: item for item in (
    service("double", [INT], [INT]),
    service("shout", [TEXT], [TEXT]),
    service("hold", [{"name": "sku", "type": "string"}, INT], [{"name": "reservation", "type": "string"}]),
    service("price", [{"name": "sku", "type": "string"}], [{"name": "price", "type": "float"}]),
    service("count", [], [{"name": "price", "type": "int"}]),
    service("label", [], [{"name": "price", "type": "string"}]),
    service("maybe", [], [{"name": "note", "type": "string", "required": False}]),
    service("note", [{"name": "note", "type": "string"}], []),
    service("hint", [{"name": "note", "type": "string", "required": False}], []),
)}


def definition(steps, inputs=(INT,), outputs=(), name="tree"):
    return {"name": name, "inputs": list(inputs), "outputs": list(outputs), "steps": steps}


def check(steps, inputs=(INT,), outputs=(), workflows=None, name="tree"):
    return plan_tree(definition(steps, inputs, outputs, name), SERVICES, workflows)


def refusals(steps, inputs=(INT,), outputs=(), workflows=None, name="tree", available=False):
    """Every problem of a tree that does not check, as (step, path, problem)."""
    with pytest.raises(DataflowError) as refused:
        check(steps, inputs, outputs, workflows, name)
    errors = refused.value.errors
    assert refused.value.message.startswith(f"the steps do not check: {errors[0]['path']}: {errors[0]['problem']}")
    if available:
        return errors
    return [(error["step"], error["path"], error["problem"]) for error in errors]


def refusal(steps, inputs=(INT,), outputs=(), workflows=None, name="tree"):
    """The one problem of a tree that does not check."""
    [problem] = refusals(steps, inputs, outputs, workflows, name)
    return problem


def inferred(steps, inputs=(INT,), workflows=None):
    """The context at the end of a tree: each key's type, described, and whether it is surely there."""
    context = final_context(definition(steps, inputs), SERVICES, workflows)
    return {key: (types.describe(slot["type"]), slot["required"]) for key, slot in context.items()}


def call(ident, name, **extra):
    return {"id": ident, "call": name, **extra}


# -- call ------------------------------------------------------------------------------------------


def test_a_call_reads_and_writes_the_keys_of_its_own_names_by_default():
    plan = check([call("first", "double")])
    assert plan["tree"] == [{"id": "first", "kind": "call", "service": "double", "in": {"n": "n"},
                             "out": {"n": "n"}}]
    assert plan["services"]["double"]["address"] == "http://double.local/"
    assert plan["node_count"] == 1 and plan["version"] == 2
    assert plan["fingerprint"] == fingerprint(plan)


def test_a_call_maps_inputs_to_expressions_and_outputs_to_keys():
    steps = [call("reserve", "hold", **{"in": {"sku": "order.id", "n": "length(order.lines)"},
                                        "out": {"reservation": "booked"}})]
    assert check(steps, inputs=(ORDER,))["tree"][0]["in"] == {"sku": "order.id", "n": "length(order.lines)"}
    assert inferred(steps, inputs=(ORDER,))["booked"] == ("string", True)


def test_an_input_of_a_missing_field_is_refused_naming_step_path_and_what_was_available():
    [error] = refusals([call("reserve", "hold", **{"in": {"sku": "order.lines[*].skuu", "n": "`1`"}})],
                       inputs=(ORDER,), available=True)
    assert (error["step"], error["path"]) == ("reserve", "reserve.in.sku")
    assert error["problem"] == ("order.lines[*].skuu: order.lines[].skuu: no field 'skuu'; "
                                "order.lines[] has sku, qty")
    assert error["available"] == {"order": "object{id: string, total: float, lines: array<object{sku: string, "
                                            "qty: int}>}"}


def test_an_input_of_an_incompatible_type_is_refused():
    assert refusal([call("reserve", "hold", **{"in": {"sku": "order.lines[0].qty", "n": "`1`"}})],
                   inputs=(ORDER,)) == (
        "reserve", "reserve.in.sku", "input 'sku' expects string but 'order.lines[0].qty' is int? (may be null, "
                                     "but string may not)")


def test_an_input_left_out_reads_its_key_and_a_missing_key_is_refused():
    assert refusal([call("loud", "shout")]) == (
        "loud", "loud.in.message", "input 'message' (string) reads context key 'message', which is not "
                                   "available; map it in \"in\"")


def test_a_call_of_an_unknown_service_input_or_output_is_refused():
    assert refusals([call("a", "nope"), call("b", "double", **{"in": {"m": "n"}, "out": {"x": "y"}})]) == [
        ("a", "a.call", "service 'nope' is not registered"),
        ("b", "b.in.m", "service 'double' has no input 'm'; its inputs: n"),
        ("b", "b.out.x", "service 'double' has no output 'x'; its outputs: n"),
    ]


@pytest.mark.parametrize("key", ["$set", "a.b", ""])
def test_an_output_written_to_a_bad_key_is_refused(key):
    assert refusal([call("a", "double", out={"n": key})]) == (
        "a", "a.out.n", "must be a context key: 1 to 100 characters, not starting with '$', without '.' or "
                        "control characters")


# -- if --------------------------------------------------------------------------------------------


def test_an_if_makes_a_key_set_on_one_branch_optional_and_names_the_branch_that_lacks_it():
    steps = [{"id": "big", "if": "n > `10`", "then": [call("loud", "shout", **{"in": {"message": "'big'"}})]}]
    plan = check(steps)
    assert plan["tree"][0] == {"id": "big", "kind": "if", "if": "n > `10`", "else": [],
                               "then": [{"id": "loud", "kind": "call", "service": "shout",
                                         "in": {"message": "'big'"}, "out": {"message": "message"}}]}
    assert inferred(steps) == {"n": ("int", True), "message": ("string", False)}
    assert refusal([*steps, call("again", "shout")]) == (
        "again", "again.in.message", "input 'message' is required but context key 'message' may be absent: "
                                     "message is set only on branch then of step big; else does not set it")
    assert refusal(steps, outputs=(TEXT,)) == (
        "end", "end.outputs.message", "workflow output 'message' is required but may be absent: message is set "
                                      "only on branch then of step big; else does not set it")


def test_a_key_set_on_only_some_branches_may_feed_an_optional_input():
    steps = [{"id": "big", "if": "n > `10`", "then": [call("m", "maybe")]}, call("h", "hint")]
    assert check(steps)["tree"][1]["in"] == {"note": "note"}


@pytest.mark.parametrize("source", ["not_null(note, 'none')", "note || 'none'"])
def test_a_key_set_on_only_some_branches_with_a_default_feeds_a_required_input(source):
    steps = [{"id": "big", "if": "n > `10`", "then": [call("m", "maybe")]},
             call("use", "note", **{"in": {"note": source}})]
    assert check(steps)["tree"][1]["in"] == {"note": source}


def test_an_if_joins_types_set_on_both_branches_to_the_wider_or_any():
    widened = [{"id": "pick", "if": "n > `1`", "then": [call("a", "count")],
                "else": [call("b", "price", **{"in": {"sku": "'x'"}})]}]
    assert inferred(widened)["price"] == ("float", True)
    unrelated = [{"id": "pick", "if": "n > `1`", "then": [call("a", "count")], "else": [call("b", "label")]}]
    assert inferred(unrelated)["price"] == ("any", True)


def test_a_key_optional_on_one_branch_stays_optional_after_the_join():
    steps = [{"id": "pick", "if": "n > `1`", "then": [call("a", "maybe")], "else": [call("b", "maybe")]}]
    assert inferred(steps)["note"] == ("string", False)


def test_a_nested_join_names_the_outer_branch_that_lacks_the_key():
    steps = [{"id": "outer", "if": "n > `1`", "then": [
        {"id": "inner", "if": "n > `2`", "then": [call("loud", "shout", **{"in": {"message": "'x'"}})],
         "else": [call("quiet", "shout", **{"in": {"message": "'y'"}})]}]}]
    assert inferred(steps)["message"] == ("string", False)
    assert refusal([*steps, call("again", "shout")])[2].endswith(
        "message is set only on branch then of step outer; else does not set it")


@pytest.mark.parametrize("condition, problem", [
    ("n", "'n' is int, not bool: a condition is a comparison or another expression of type bool"),
    ("order.id", "'order.id' is string, not bool: a condition is a comparison or another expression of type bool"),
    ("length(order.lines)", "'length(order.lines)' is int, not bool: a condition is a comparison or another "
                            "expression of type bool"),
    ("order.totl > `1`", "order.totl > `1`: order.totl: no field 'totl'; order has id, total, lines"),
    ("'a' < n", "'a' < n: compares \"a\" with int; <, <=, >, >= compare two numbers or two strings"),
    ("order < n", "order < n: compares object{id: string, total: float, lines: array<object{sku: string, "
                  "qty: int}>} with int; <, <=, >, >= compare two numbers or two strings"),
    ("n >", "'n >' does not parse: column 4: Invalid jmespath expression"),
    ("nope(n)", "'nope(n)': unknown function nope(); known functions: " + ", ".join(sorted(
        jmespath.functions.Functions().FUNCTION_TABLE))),
])
def test_a_condition_that_is_not_a_bool_over_existing_comparable_fields_is_refused(condition, problem):
    assert refusal([{"id": "big", "if": condition, "then": [call("a", "double")]}], inputs=(INT, ORDER)) == (
        "big", "big.if", problem)


@pytest.mark.parametrize("condition", [
    "n > `1`", "n < `1.5`", "order.total >= n", "order.id < 'm'", "n == order.id", "flag", "!flag",
    "flag && n > `1`", "contains(order.id, 'x')", "length(order.lines) > `0`",
    "order.lines[?qty > `1`] | [0] != `null`",
])
def test_a_bool_condition_over_comparable_fields_checks(condition):
    check([{"id": "big", "if": condition, "then": [call("a", "double")]}], inputs=(INT, ORDER, FLAG))


@pytest.mark.parametrize("given", [{}, False, "", 0])
def test_an_else_default_or_collect_that_is_not_a_list_is_refused_even_when_empty(given):
    assert refusal([{"id": "big", "if": "n > `1`", "then": [], "else": given}]) == (
        "big", "big.else", f"must be a list of steps, got {types.json_type(given)}")
    assert refusal([{"id": "route", "switch": {"cases": [{"when": "n > `1`", "steps": []}], "default": given}}]) == (
        "route", "route.default", f"must be a list of steps, got {types.json_type(given)}")
    if given != {}:
        assert refusal([{"id": "each", "map": "order.lines", "steps": [], "collect": given}], inputs=(ORDER,)) == (
            "each", "each.collect", "must map outer keys to expressions over the item's context")


@pytest.mark.parametrize("kind", ["else", "default", "collect"])
def test_an_else_default_or_collect_given_as_null_is_left_out(kind):
    if kind == "else":
        check([{"id": "big", "if": "n > `1`", "then": [], "else": None}])
    elif kind == "default":
        check([{"id": "route", "switch": {"cases": [{"when": "n > `1`", "steps": []}], "default": None}}])
    else:
        check([{"id": "each", "map": "order.lines", "steps": [], "collect": None}], inputs=(ORDER,))


def test_an_if_without_then_is_refused():
    assert refusal([{"id": "big", "if": "n > `1`", "else": [call("a", "double")]}]) == (
        "big", "big.then", "an if step needs \"then\": the steps to run when it holds")


# -- switch ----------------------------------------------------------------------------------------


SWITCH = {"id": "route", "switch": {
    "cases": [{"when": "n == `1`", "steps": [call("one", "shout", **{"in": {"message": "'one'"}}),
                                             call("m1", "maybe")]},
              {"when": "n == `2`", "steps": [call("two", "shout", **{"in": {"message": "'two'"}})]}],
    "default": [call("other", "shout", **{"in": {"message": "'other'"}})]}}


def test_a_switch_keeps_a_key_set_on_every_path_and_makes_the_others_optional():
    plan = check([SWITCH])
    node = plan["tree"][0]
    assert [case["when"] for case in node["cases"]] == ["n == `1`", "n == `2`"]
    assert [step["id"] for step in node["default"]] == ["other"] and plan["node_count"] == 5
    assert inferred([SWITCH]) == {"n": ("int", True), "message": ("string", True), "note": ("string", False)}


def test_a_switch_names_the_case_that_sets_a_key_and_the_ones_that_do_not():
    steps = [SWITCH, call("use", "note")]
    assert refusal(steps) == ("use", "use.in.note", "input 'note' is required but context key 'note' may be "
                                                    "absent: note is set only on branch cases[0] of step route; "
                                                    "cases[1], default do not set it")


def test_a_switch_without_default_leaves_a_key_of_every_case_optional():
    steps = [{"id": "route", "switch": {"cases": SWITCH["switch"]["cases"]}}, call("use", "shout")]
    assert refusal(steps)[2] == ("input 'message' is required but context key 'message' may be absent: message "
                                 "is set only on branches cases[0], cases[1] of step route; default does not set it")


@pytest.mark.parametrize("change, expected", [
    (lambda spec: spec["cases"][1].update(when="n"),
     ("route", "route.cases[1].when", "'n' is int, not bool: a condition is a comparison or another expression "
                                      "of type bool")),
    (lambda spec: spec["cases"][0].update(when="m == `1`"),
     ("route", "route.cases[0].when", "m == `1`: m: no field 'm'; the context has n")),
    (lambda spec: spec["cases"][0].update(when="n =="),
     ("route", "route.cases[0].when", "'n ==' does not parse: column 5: Invalid jmespath expression")),
    (lambda spec: spec["cases"][0].pop("when"),
     ("route", "route.cases[0]", "a case is {\"when\": <expr>, \"steps\": [...]}")),
    (lambda spec: spec.update(cases=[]),
     ("route", "route.switch", "must be {\"cases\": [{\"when\": <expr>, \"steps\": [...]}, ...], \"default\": "
                               "[...]} with at least one case")),
    (lambda spec: spec.update(otherwise=[]), ("route", "route.switch.otherwise", "a switch holds \"cases\" and "
                                                                                  "\"default\"")),
])
def test_a_bad_switch_is_refused_naming_the_case(change, expected):
    switch = copy.deepcopy(SWITCH)
    change(switch["switch"])
    assert refusal([switch]) == expected


# -- parallel --------------------------------------------------------------------------------------


def test_parallel_branches_writing_different_keys_both_hold_after_the_join():
    steps = [{"id": "both", "parallel": {"a": [call("pa", "double", out={"n": "a"})],
                                         "b": [call("pb", "shout", **{"in": {"message": "'b'"}})]}}]
    plan = check(steps)
    assert [branch["name"] for branch in plan["tree"][0]["branches"]] == ["a", "b"]
    assert plan["tree"][0]["branches"][0]["steps"][0]["out"] == {"n": "a"}
    assert inferred(steps) == {"n": ("int", True), "a": ("int", True), "message": ("string", True)}


def test_parallel_branches_whose_maps_collect_one_key_are_refused():
    each = {"map": "order.lines", "steps": [], "collect": {"skus": "item.sku"}}
    assert refusal([{"id": "both", "parallel": {"a": [{"id": "ma", **each}], "b": [{"id": "mb", **each}]}}],
                   inputs=(ORDER,)) == ("both", "both.b", "branches a and b of step both both write 'skus'; "
                                                          "parallel branches write different keys")


def test_parallel_branches_writing_one_key_are_refused_naming_both():
    [error] = refusals([{"id": "both", "parallel": {"a": [call("pa", "double", out={"n": "a"})],
                                                    "b": [call("pb", "double", out={"n": "a"})]}}], available=True)
    assert (error["step"], error["path"], error["problem"]) == (
        "both", "both.b", "branches a and b of step both both write 'a'; parallel branches write different keys")
    assert error["available"] == {"n": "int"}


def test_a_key_written_deep_inside_a_branch_counts_as_the_branch_writing_it():
    steps = [{"id": "both", "parallel": {
        "a": [call("pa", "double")],
        "b": [{"id": "deep", "if": "n > `0`", "then": [call("pb", "double")]}]}}]
    assert refusal(steps) == ("both", "both.b", "branches a and b of step both both write 'n'; parallel branches "
                                                "write different keys")


@pytest.mark.parametrize("spec, path, problem", [
    ({}, "both.parallel", "must map branch names to lists of steps"),
    ([], "both.parallel", "must map branch names to lists of steps"),
    ({"a": "x"}, "both.a", "must be a list of steps, got string"),
    ({"1a": []}, "both.parallel", "branch name '1a': 1 to 64 letters, digits, '_' or '-', starting with a letter "
                                  "or '_'"),
])
def test_a_bad_parallel_is_refused(spec, path, problem):
    assert refusal([{"id": "both", "parallel": spec}]) == ("both", path, problem)


# -- map -------------------------------------------------------------------------------------------


MAP = {"id": "each", "map": "order.lines", "as": "line", "max_concurrency": 4,
       "steps": [call("reserve", "hold", **{"in": {"sku": "line.sku", "n": "line.qty"}})],
       "collect": {"reservations": "reservation", "skus": "line.sku"}}


def test_a_map_gives_its_item_the_array_item_type_and_collects_arrays_of_the_body_types():
    plan = check([MAP], inputs=(ORDER,))
    assert plan["tree"][0] == {
        "id": "each", "kind": "map", "map": "order.lines", "as": "line", "max_concurrency": 4,
        "steps": [{"id": "reserve", "kind": "call", "service": "hold", "in": {"sku": "line.sku", "n": "line.qty"},
                   "out": {"reservation": "reservation"}}],
        "collect": {"reservations": "reservation", "skus": "line.sku"}}
    # What the body writes stays in the item: only the collected keys come out, as arrays.
    assert inferred([MAP], inputs=(ORDER,)) == {
        "order": (types.describe(ORDER["type"]), True),
        "reservations": ("array<string>", True), "skus": ("array<string>", True)}


def test_the_item_has_the_array_item_type_so_a_wrong_use_is_refused_naming_the_item_path():
    step = copy.deepcopy(MAP)
    step["steps"][0]["in"] = {"sku": "line.qty", "n": "line.qty"}
    assert refusal([step], inputs=(ORDER,)) == ("reserve", "reserve.in.sku",
                                                "input 'sku' expects string but 'line.qty' is int")
    step["steps"][0]["in"] = {"sku": "line.skuu", "n": "line.qty"}
    assert refusal([step], inputs=(ORDER,)) == ("reserve", "reserve.in.sku",
                                                "line.skuu: no field 'skuu'; line has sku, qty")


def test_the_item_is_named_item_by_default_and_an_array_of_arrays_gives_arrays():
    matrix = {"name": "matrix", "type": {"type": "array", "items": {"type": "array", "items": "int"}}}
    step = {"id": "rows", "map": "matrix", "steps": [], "collect": {"firsts": "item[0]", "rows": "item"}}
    assert check([step], inputs=(matrix,))["tree"][0]["as"] == "item"
    assert check([step], inputs=(matrix,))["tree"][0]["max_concurrency"] == 8
    assert inferred([step], inputs=(matrix,))["firsts"] == ("array<int?>", True)
    assert inferred([step], inputs=(matrix,))["rows"] == ("array<array<int>>", True)


def test_a_collected_key_an_item_may_lack_is_an_array_of_nullable_values():
    step = {"id": "each", "map": "order.lines", "steps": [call("m", "maybe")], "collect": {"notes": "note"}}
    assert inferred([step], inputs=(ORDER,))["notes"] == ("array<string?>", True)
    wanted = {"name": "notes", "type": {"type": "array", "items": "string"}}
    assert refusal([step], inputs=(ORDER,), outputs=(wanted,)) == (
        "end", "end.outputs.notes", "workflow output 'notes' expects array<string> but the context holds "
                                    "array<string?> ([]: may be null, but string may not)")


def test_an_empty_array_collects_empty_arrays_so_collected_keys_are_always_there():
    # An array of no items runs the body never; each collected key is then [], not absent: a required
    # workflow output of it checks.
    wanted = {"name": "reservations", "type": {"type": "array", "items": "string"}}
    check([MAP], inputs=(ORDER,), outputs=(wanted,))


def test_a_map_over_any_gives_an_item_of_any():
    anything = {"name": "things", "type": "any"}
    step = {"id": "each", "map": "things", "steps": [], "collect": {"ids": "item.id"}}
    assert inferred([step], inputs=(anything,))["ids"] == ("array<any>", True)


@pytest.mark.parametrize("source, problem", [
    ("order", "'order' is object{id: string, total: float, lines: array<object{sku: string, qty: int}>}, not an "
              "array: a map runs its steps once per item of an array"),
    ("order.total", "'order.total' is float, not an array: a map runs its steps once per item of an array"),
    ("order.lines[", "'order.lines[' does not parse: column 13: Invalid jmespath expression"),
    ("order.line", "order.line: no field 'line'; order has id, total, lines"),
])
def test_a_map_over_what_is_not_an_array_is_refused(source, problem):
    assert refusal([{"id": "each", "map": source, "steps": []}], inputs=(ORDER,)) == ("each", "each.map", problem)


def test_a_map_over_an_array_that_may_be_null_is_refused_and_a_default_checks():
    steps = [{"id": "big", "if": "n > `1`", "then": [{"id": "first", "map": "order.lines", "steps": [],
                                                      "collect": {"qtys": "item.qty"}}]},
             {"id": "each", "map": "qtys", "steps": []}]
    assert refusal(steps, inputs=(INT, ORDER)) == (
        "each", "each.map", "'qtys' is array<int>?, which may be null (qtys is set only on branch then of step "
                            "big; else does not set it): a map runs over an array; give a default, such as "
                            "not_null(qtys, `[]`)")
    steps[1]["map"] = "not_null(qtys, `[]`)"
    check(steps, inputs=(INT, ORDER))


def test_a_map_over_an_optional_input_is_refused():
    lines = {"name": "lines", "type": {"type": "array", "items": "int"}, "required": False}
    assert refusal([{"id": "each", "map": "lines", "steps": []}], inputs=(lines,)) == (
        "each", "each.map", "'lines' is array<int>?, which may be null: a map runs over an array; give a default, "
                            "such as not_null(lines, `[]`)")


@pytest.mark.parametrize("limit", [1, 8, 256])
def test_max_concurrency_from_1_to_256_checks(limit):
    assert check([{**MAP, "max_concurrency": limit}], inputs=(ORDER,))["tree"][0]["max_concurrency"] == limit


@pytest.mark.parametrize("limit, shown", [(0, "0"), (257, "257"), (-1, "-1"), (True, "true"), (1.5, "1.5"),
                                          ("8", '"8"'), (None, "null")])
def test_max_concurrency_outside_1_to_256_is_refused(limit, shown):
    assert refusal([{**MAP, "max_concurrency": limit}], inputs=(ORDER,)) == (
        "each", "each.max_concurrency", f"must be a whole number from 1 to 256, got {shown}")


@pytest.mark.parametrize("change, expected", [
    (lambda step: step.pop("steps"), ("each", "each.steps", "a map needs \"steps\": what runs for each item")),
    (lambda step: step.update(steps="x"), ("each", "each.steps", "must be a list of steps, got string")),
    (lambda step: step.update(collect={"all": "reservatio"}),
     ("each", "each.collect.all", "reservatio: no field 'reservatio'; the context has order, line, reservation")),
    (lambda step: step.update(collect={"a.b": "reservation"}),
     ("each", "each.collect.a.b", "must be a context key: 1 to 100 characters, not starting with '$', without '.' "
                                  "or control characters")),
    (lambda step: step.update(collect=["reservation"]),
     ("each", "each.collect", "must map outer keys to expressions over the item's context")),
    (lambda step: step.update({"as": "$item", "steps": []}),
     ("each", "each.as", "must be a context key: 1 to 100 characters, not starting with '$', without '.' or "
                         "control characters")),
])
def test_a_bad_map_is_refused(change, expected):
    step = copy.deepcopy(MAP)
    change(step)
    assert refusal([step], inputs=(ORDER,)) == expected


# -- workflow (a child) ----------------------------------------------------------------------------


CHILD = {"name": "child", "workflow_id": "0" * 24, "version": 3, "inputs": [INT], "outputs": [TEXT],
         "steps": [call("c", "double")], "workflows": []}


def test_a_child_workflow_is_checked_like_a_service_and_its_outputs_are_typed():
    steps = [{"id": "sub", "workflow": "child", "out": {"message": "said"}}]
    plan = check(steps, workflows={"child": CHILD})
    assert plan["tree"] == [{"id": "sub", "kind": "workflow", "workflow": "child", "in": {"n": "n"},
                             "out": {"message": "said"}}]
    assert plan["workflows"] == {"child": {"workflow_id": "0" * 24, "name": "child", "version": 3,
                                           "inputs": [INT], "outputs": [TEXT]}}
    assert inferred(steps, workflows={"child": CHILD})["said"] == ("string", True)


@pytest.mark.parametrize("step, expected", [
    ({"in": {"n": "'x'"}}, ("sub", "sub.in.n", "input 'n' expects int but \"'x'\" is \"x\"")),
    ({"in": {"m": "n"}}, ("sub", "sub.in.m", "workflow 'child' has no input 'm'; its inputs: n")),
    ({"out": {"said": "x"}}, ("sub", "sub.out.said", "workflow 'child' has no output 'said'; its outputs: message")),
])
def test_a_child_workflow_input_or_output_that_does_not_fit_is_refused(step, expected):
    assert refusal([{"id": "sub", "workflow": "child", **step}], workflows={"child": CHILD}) == expected


def test_a_child_workflow_input_reads_a_missing_key_is_refused():
    assert refusal([{"id": "sub", "workflow": "child"}], inputs=(TEXT,), workflows={"child": CHILD}) == (
        "sub", "sub.in.n", "input 'n' (int) reads context key 'n', which is not available; map it in \"in\"")


def test_an_unregistered_child_is_refused():
    assert refusal([{"id": "sub", "workflow": "ghost"}]) == ("sub", "sub.workflow", "workflow 'ghost' is not "
                                                                                    "registered")


def test_a_workflow_running_itself_is_a_cycle():
    assert refusal([{"id": "sub", "workflow": "tree"}]) == ("sub", "sub.workflow", "workflow 'tree' runs itself: "
                                                                                   "a cycle")


def test_a_cycle_through_children_is_refused_naming_the_chain():
    children = {"b": {**CHILD, "name": "b", "workflows": ["c"]}, "c": {**CHILD, "name": "c", "workflows": ["tree"]}}
    assert refusal([{"id": "sub", "workflow": "b"}], workflows=children) == (
        "sub", "sub.workflow", "a cycle through child workflows: tree -> b -> c -> tree")


def test_a_cycle_is_found_from_a_child_steps_when_it_lists_no_children():
    child = {key: value for key, value in CHILD.items() if key != "workflows"}
    child["steps"] = [{"id": "back", "if": "n > `0`", "then": [{"id": "up", "workflow": "tree"}]}]
    assert refusal([{"id": "sub", "workflow": "child"}], workflows={"child": child}) == (
        "sub", "sub.workflow", "a cycle through child workflows: tree -> child -> tree")


def test_children_that_share_a_grandchild_are_no_cycle():
    children = {"b": {**CHILD, "name": "b", "workflows": ["d"]}, "c": {**CHILD, "name": "c", "workflows": ["d"]},
                "d": {**CHILD, "name": "d"}}
    check([{"id": "x", "workflow": "b"}, {"id": "y", "workflow": "c"}], workflows=children)


# -- sleep -----------------------------------------------------------------------------------------


def test_a_sleep_waits_seconds_or_until_a_time_given_as_text():
    stamp = {"name": "at", "type": "string"}
    plan = check([{"id": "nap", "sleep": {"seconds": 1.5}}, {"id": "wake", "sleep": {"until": "at"}}],
                 inputs=(stamp,))
    assert plan["tree"] == [{"id": "nap", "kind": "sleep", "seconds": 1.5},
                            {"id": "wake", "kind": "sleep", "until": "at"}]


@pytest.mark.parametrize("spec, path, problem", [
    ({"seconds": 0}, "nap.sleep.seconds", "must be a number of seconds above 0 and at most 31536000 (a year), "
                                          "got 0"),
    ({"seconds": 31536001}, "nap.sleep.seconds", "must be a number of seconds above 0 and at most 31536000 "
                                                 "(a year), got 31536001"),
    ({"seconds": "1"}, "nap.sleep.seconds", "must be a number of seconds above 0 and at most 31536000 (a year), "
                                            "got \"1\""),
    ({"until": "n"}, "nap.sleep.until", "'n' is int, not a string: until is an ISO 8601 date and time"),
    ({"until": "when"}, "nap.sleep.until", "when: no field 'when'; the context has n"),
    ({}, "nap.sleep", "must be {\"seconds\": <number>} or {\"until\": <expr>}"),
    ({"seconds": 1, "until": "n"}, "nap.sleep", "must be {\"seconds\": <number>} or {\"until\": <expr>}"),
])
def test_a_bad_sleep_is_refused(spec, path, problem):
    assert refusal([{"id": "nap", "sleep": spec}]) == ("nap", path, problem)


# -- ids and kinds ---------------------------------------------------------------------------------


@pytest.mark.parametrize("steps, expected", [
    ([call("a", "double"), {"id": "b", "if": "n > `0`", "then": [call("a", "double")]}],
     ("a", "b.then[0].id", "id 'a' is used by another step; ids are unique in the whole workflow")),
    ([call("a", "double"), call("a", "double")],
     ("a", "steps[1].id", "id 'a' is used by another step; ids are unique in the whole workflow")),
    ([{"id": "x", "loop": "forever"}],
     ("x", "x", "step 'x' has no kind: a step holds one of call, if, switch, parallel, map, workflow, sleep, "
                "poll (unknown key loop)")),
    ([{"id": "x"}], ("x", "x", "step 'x' has no kind: a step holds one of call, if, switch, parallel, map, "
                               "workflow, sleep, poll")),
    ([{"id": "x", "call": "double", "sleep": {"seconds": 1}}],
     ("x", "x", "step 'x' has two kinds: call, sleep; a step is one of them")),
    ([{"id": "x", "call": "double", "then": []}],
     ("x", "x.then", "a call step does not take 'then'; it takes call, description, id, in, out")),
    ([{"id": "1x", "call": "double"}],
     ("steps[0]", "steps[0].id", "a step's id is 1 to 64 letters, digits, '_' or '-', starting with a letter or "
                                 "'_'; got \"1x\"")),
    ([{"call": "double"}],
     ("steps[0]", "steps[0].id", "a step's id is 1 to 64 letters, digits, '_' or '-', starting with a letter or "
                                 "'_'; got null")),
    (["double"], ("steps[0]", "steps[0]", "a step is an object with an id and one kind (call, if, switch, "
                                          "parallel, map, workflow, sleep, poll), got string")),
    ([{"id": "x", "call": "double", "description": {"long": "text"}}],
     ("x", "x.description", "a step's description is text of at most 2000 characters, got object")),
    ([{"id": "x", "call": "double", "description": "d" * 2001}],
     ("x", "x.description", "a step's description is text of at most 2000 characters, got string of 2001")),
])
def test_bad_ids_and_kinds_are_refused_naming_the_step(steps, expected):
    assert refusal(steps) == expected


def test_a_step_may_carry_a_description():
    check([{"id": "x", "call": "double", "description": "doubles n"}])


def test_every_problem_of_a_tree_is_reported_each_at_its_path():
    steps = [{"id": "big", "if": "n", "then": [call("a", "nope")]},
             {"id": "each", "map": "n", "steps": [], "max_concurrency": 0}]
    assert [problem[:2] for problem in refusals(steps)] == [
        ("big", "big.if"), ("a", "a.call"), ("each", "each.map"), ("each", "each.max_concurrency")]


# -- limits ----------------------------------------------------------------------------------------


VALUES = {"name": "values", "type": {"type": "array", "items": "int"}}
BODY = {"if": "k{level}.then", "switch": "k{level}.cases[0].steps", "parallel": "k{level}.only",
        "map": "k{level}.steps"}


def chain(kind: str, levels: int, innermost: list) -> list:
    """`levels` steps of one kind, each in the body of the one above, `innermost` in the last one's."""
    steps = innermost
    for level in range(levels, 0, -1):
        ident = f"k{level}"
        if kind == "if":
            steps = [{"id": ident, "if": "n > `0`", "then": steps}]
        elif kind == "switch":
            steps = [{"id": ident, "switch": {"cases": [{"when": "n > `0`", "steps": steps}]}}]
        elif kind == "parallel":
            steps = [{"id": ident, "parallel": {"only": steps}}]
        else:
            steps = [{"id": ident, "map": "values", "as": "n", "steps": steps}]
    return steps


@pytest.mark.parametrize("kind", list(BODY))
def test_a_tree_sixteen_deep_checks_whatever_kind_nests(kind):
    plan = check(chain(kind, MAX_DEPTH - 1, [call("leaf", "double")]), inputs=(INT, VALUES))
    assert plan["node_count"] == MAX_DEPTH


@pytest.mark.parametrize("kind", list(BODY))
def test_a_tree_seventeen_deep_is_one_error_at_the_list_too_deep(kind):
    # The list at the 17th level is refused once; the empty else (or default) beside it is no second error.
    steps = chain(kind, MAX_DEPTH, [call("leaf", "double")])
    assert refusals(steps, inputs=(INT, VALUES)) == [
        ("k16", BODY[kind].format(level=16), "steps nest deeper than 16 levels")]


@pytest.mark.parametrize("innermost", [
    {"id": "deep", "if": "n > `0`", "then": []},
    {"id": "deep", "switch": {"cases": [{"when": "n > `0`", "steps": []}]}},
    {"id": "deep", "parallel": {"a": []}},
    {"id": "deep", "map": "values", "steps": []},
])
def test_a_step_at_the_sixteenth_level_may_hold_empty_lists(innermost):
    check(chain("if", MAX_DEPTH - 1, [innermost]), inputs=(INT, VALUES))


def test_five_hundred_steps_check_and_one_more_is_one_error():
    check([call(f"s{number}", "double") for number in range(MAX_STEPS)])
    assert refusals([call(f"s{number}", "double") for number in range(MAX_STEPS + 1)]) == [
        ("workflow", "steps", "more than 500 steps in all")]


def test_the_step_limit_counts_nested_steps():
    steps = [{"id": "big", "if": "n > `0`", "then": [call(f"t{number}", "double") for number in range(250)],
              "else": [call(f"e{number}", "double") for number in range(250)]}]
    assert refusals(steps) == [("workflow", "steps", "more than 500 steps in all")]
    steps[0]["else"].pop()
    assert check(steps)["node_count"] == MAX_STEPS


# -- version 1, the short form ---------------------------------------------------------------------


EXAMPLES = Path(__file__).resolve().parents[2] / "examples" / "definitions"


def example(name: str) -> dict:
    path = next(path for path in EXAMPLES.glob(f"{name}.*") if path.suffix in (".json", ".yaml"))
    return yaml.safe_load(path.read_text()) if path.suffix == ".yaml" else json.loads(path.read_text())


EXAMPLE_SERVICES = {item["name"]: item for item in map(example, sorted(
    path.stem for path in EXAMPLES.glob("service-*")))}
V1_EXAMPLES = [path.stem for path in sorted(EXAMPLES.glob("workflow-*")) if "services" in example(path.stem)]


def test_normalise_writes_each_service_as_a_call_step_named_by_its_position():
    v1 = {"name": "v1", "inputs": [TEXT], "outputs": [], "services": ["shout", "shout", "price"],
          "operations": [{"service": "shout", "step": 1, "outputs": {"message": "loud"}},
                         {"service": "price", "inputs": {"sku": "my-key"}}]}
    assert normalise(v1) == [
        {"id": "step-0", "call": "shout"},
        {"id": "step-1", "call": "shout", "out": {"message": "loud"}},
        {"id": "step-2", "call": "price", "in": {"sku": '"my-key"'}},
    ]
    assert planner.key_expression("my-key") == '"my-key"' and planner.key_expression("sku") == "sku"


def test_a_v1_definition_and_its_written_out_tree_give_the_same_plan():
    v1 = {"name": "v1", "inputs": [TEXT, {"name": "code", "type": "string"}], "outputs": [
        {"name": "loud", "type": "string"}, {"name": "price", "type": "float"}],
        "services": ["shout", "shout", "price"],
        "operations": [{"service": "shout", "step": 1, "outputs": {"message": "loud"}},
                       {"service": "price", "inputs": {"sku": "code"}}]}
    written = {"name": "v1", "inputs": v1["inputs"], "outputs": v1["outputs"], "steps": [
        {"id": "step-0", "call": "shout"},
        {"id": "step-1", "call": "shout", "in": {"message": "message"}, "out": {"message": "loud"}},
        {"id": "step-2", "call": "price", "in": {"sku": "code"}, "out": {"price": "price"}},
    ]}
    short = plan_tree({**v1, "steps": normalise(v1)}, SERVICES)
    assert short == plan_tree(written, SERVICES)
    assert short["fingerprint"] == plan_tree(written, SERVICES)["fingerprint"]
    assert final_context({**v1, "steps": normalise(v1)}, SERVICES) == final_context(written, SERVICES)


@pytest.mark.parametrize("name", V1_EXAMPLES)
def test_each_v1_example_checks_as_a_tree_reading_and_writing_the_keys_its_chain_does(name):
    v1 = example(name)
    chain = dataflow.plan(v1, EXAMPLE_SERVICES)
    tree = plan_tree({**v1, "steps": normalise(v1)}, EXAMPLE_SERVICES)
    assert [node["id"] for node in tree["tree"]] == [f"step-{index}" for index in range(len(v1["services"]))]
    assert [node["service"] for node in tree["tree"]] == v1["services"]
    assert [node["in"] for node in tree["tree"]] == [
        {field: planner.key_expression(key) for field, key in step["inputs"].items()} for step in chain["steps"]]
    assert [node["out"] for node in tree["tree"]] == [step["outputs"] for step in chain["steps"]]
    assert tree["inputs"] == chain["inputs"] and tree["outputs"] == chain["outputs"]


def test_a_v1_chain_the_chain_check_refuses_is_refused_as_a_tree_at_the_same_step_and_field():
    v1 = {"name": "v1", "inputs": [INT], "outputs": [], "services": ["double", "shout"]}
    with pytest.raises(DataflowError) as chain:
        dataflow.plan(v1, SERVICES)
    [problem] = chain.value.errors
    assert (problem["step"], problem["field"]) == (1, "message")
    assert refusal(normalise(v1)) == ("step-1", "step-1.in.message", "input 'message' (string) reads context key "
                                                                     "'message', which is not available; map it "
                                                                     "in \"in\"")


def test_a_v1_operation_that_names_no_step_is_refused_by_normalise():
    v1 = {"name": "v1", "inputs": [INT], "outputs": [], "services": ["double"],
          "operations": [{"service": "shout", "outputs": {"message": "x"}}]}
    with pytest.raises(DataflowError) as refused:
        normalise(v1)
    assert refused.value.errors == [{"where": "operations[0]", "field": "service",
                                     "problem": "service 'shout' is not a step of this workflow"}]


@pytest.mark.parametrize("name", [path.stem for path in sorted(EXAMPLES.glob("workflow-*"))
                                  if "steps" in example(path.stem)])
def test_each_tree_example_checks(name):
    assert plan_tree(example(name), EXAMPLE_SERVICES)["node_count"] > 0

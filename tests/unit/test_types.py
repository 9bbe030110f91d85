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

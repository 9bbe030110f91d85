"""The type system: type names, compatibility between fields, and checking data against a field list."""

from __future__ import annotations

from typing import Any, Iterable, Mapping

# Canonical names first; aliases map onto them.
CANONICAL = ("string", "int", "float", "bool", "object", "array", "any")
ALIASES = {
    "string": "string", "str": "string",
    "int": "int", "integer": "int",
    "float": "float", "number": "float",
    "bool": "bool", "boolean": "bool",
    "object": "object", "dict": "object",
    "array": "array", "list": "array",
    "any": "any",
}
TYPE_NAMES = tuple(sorted(ALIASES))


def canonical(type_name: str) -> str:
    """Return the canonical name of a type; raise ValueError for an unknown one."""
    try:
        return ALIASES[type_name.lower()] if isinstance(type_name, str) else ALIASES[type_name]
    except (KeyError, TypeError):
        raise ValueError(
            f"unknown type {type_name!r}; known types: {', '.join(TYPE_NAMES)}"
        ) from None


def compatible(produced: str, wanted: str) -> bool:
    """Whether a value declared as `produced` may feed a field declared as `wanted`."""
    produced, wanted = canonical(produced), canonical(wanted)
    if "any" in (produced, wanted):
        return True
    if produced == wanted:
        return True
    return produced == "int" and wanted == "float"


def matches(value: Any, type_name: str) -> bool:
    """Whether a JSON value is of the declared type (bool is never an int; an int is a float)."""
    kind = canonical(type_name)
    if kind == "any":
        return True
    if kind == "string":
        return isinstance(value, str)
    if kind == "bool":
        return isinstance(value, bool)
    if kind == "int":
        return isinstance(value, int) and not isinstance(value, bool)
    if kind == "float":
        return isinstance(value, (int, float)) and not isinstance(value, bool)
    if kind == "object":
        return isinstance(value, dict)
    return isinstance(value, list)


def json_type(value: Any) -> str:
    """Name the type of a JSON value in our words, for error messages."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "array"
    return type(value).__name__


def check(data: Mapping[str, Any], fields: Iterable[Mapping[str, Any]]) -> dict[str, str]:
    """Check data against declared fields; return {field name: problem}, empty when it matches."""
    problems: dict[str, str] = {}
    for field in fields:
        name, kind = field["name"], field["type"]
        if name not in data:
            problems[name] = f"missing (expected {canonical(kind)})"
        elif not matches(data[name], kind):
            problems[name] = f"expected {canonical(kind)}, got {json_type(data[name])}"
    return problems

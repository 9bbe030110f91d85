"""Search attributes: the context values a workflow declares searchable, and the filters that find them.

A workflow may declare ``search: ["customer_id", "order.total"]``: JMESPath expressions over the
context, compiled once per plan and checked at registration against what the context can hold. Each
event keeps their values in ``attrs`` (``[{"k": "customer_id", "v": "c1"}, ...]``), set in the very
write that changes its context (``fold``), so that searching costs no write of its own. Only scalar
values are kept: strings (up to MAX_VALUE characters), finite numbers and booleans; an expression that
gives null, an object or a list (or nothing) leaves that attribute out of the event.

Filters are query parameters ``attr.<path>[__<op>]=<value>``: ``attr.customer_id=c1``,
``attr.order.total__gt=100``. The value is read as JSON where it is a number, ``true``/``false`` or a
quoted string (``attr.code="42"`` is the string 42), and as the plain string otherwise.
"""

from __future__ import annotations

import json
import math
from typing import Any, Iterable, Mapping

from machinery.exceptions import DataflowError, InvalidData
from machinery.language import types
from machinery.language.expressions import ExpressionError, compile_expression, infer

MAX_PATHS = 20
MAX_PATH_LENGTH = 200
MAX_VALUE = 512  # characters of a string value kept; a longer one is not searchable
MAX_FILTERS = 10
PREFIX = "attr."
OPERATORS = ("gt", "gte", "lt", "lte", "ne")
SCALAR_TYPES = ("string", "int", "float", "bool", "any")
_INT64 = 2**63


# -- at registration ------------------------------------------------------------------------------

def checked_paths(search: Any, context: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """The search paths of a definition, each compiled and typed over the context a run can end
    with (`context`: key -> {"type", "required"}); DataflowError naming every path that does not
    compile, names nothing the context can hold, or can only give an object or a list."""
    if search is None:
        return []
    problems: list[dict] = []
    if not isinstance(search, list) or len(search) > MAX_PATHS:
        raise DataflowError(f"search must be a list of at most {MAX_PATHS} JMESPath expressions",
                            errors=[{"path": "search", "problem": f"a list of at most {MAX_PATHS} expressions"}])
    seen: set[str] = set()
    for index, text in enumerate(search):
        where = f"search[{index}]"
        if not isinstance(text, str) or not 0 < len(text) <= MAX_PATH_LENGTH:
            problems.append({"path": where, "problem": f"a JMESPath expression of 1 to {MAX_PATH_LENGTH} characters"})
            continue
        if text in seen:
            problems.append({"path": where, "problem": f"{text!r} is given twice"})
            continue
        seen.add(text)
        try:
            compiled = compile_expression(text)
        except ExpressionError as error:
            problems.append({"path": where, "problem": str(error)})
            continue
        result, found = infer(compiled, context)
        if found:
            problems.append({"path": where, "problem": f"{text}: {found[0]}",
                             "available": sorted(context)})
        elif result["type"] not in SCALAR_TYPES:
            problems.append({"path": where, "problem": f"{text} is {types.describe(result)}; search keeps "
                                                         "strings, numbers and booleans"})
    if problems:
        first = problems[0]
        raise DataflowError(f"search does not check: {first['path']}: {first['problem']}", errors=problems)
    return list(search)


# -- at each write of the context -----------------------------------------------------------------

def searchable(value: Any) -> bool:
    """Whether a value is one search keeps: a string of at most MAX_VALUE characters, a finite number
    that fits MongoDB's 64-bit integers or doubles, or a boolean."""
    kind = type(value)
    if kind is str:
        return len(value) <= MAX_VALUE
    if kind is bool:
        return True
    if isinstance(value, int):  # an int, or bson's Int64 (the store reads those back as ints; a value
        # decoded without its decoder, or built by a caller, may still be one)
        return -_INT64 <= value < _INT64
    if kind is float:
        return math.isfinite(value)
    return False


def attributes(paths: Iterable[str], context: Mapping[str, Any]) -> list[dict]:
    """The search attributes of a context: one {"k": path, "v": value} per path giving a value search keeps."""
    found = []
    for path in paths:
        try:
            value = compile_expression(path).search(context)
        except ExpressionError:
            continue
        if searchable(value):
            found.append({"k": path, "v": value})
    return found


def fold(plan: Mapping[str, Any], fields: dict) -> dict:
    """Add `attrs` to the fields an event write sets when they set its context and its plan declares
    search paths: the attributes are kept by the write that changes them, never by a write of their own."""
    paths = plan.get("search") if plan else None
    if paths and "context" in fields:
        fields["attrs"] = attributes(paths, fields["context"] or {})
    return fields


# -- filters ---------------------------------------------------------------------------------------

def parse_value(text: str) -> Any:
    """A filter's value: a JSON number, boolean or quoted string where the text is one, else the text."""
    try:
        value = json.loads(text)
    except ValueError:
        return text
    if type(value) in (int, float, bool, str) and searchable(value):
        return value
    return text


def parse_filters(arguments: Iterable[tuple[str, Any]], workflow: Mapping[str, Any] | None = None,
                  prefix: str = PREFIX) -> list[tuple[str, str, Any]]:
    """The (path, operator, value) filters among query arguments named ``attr.<path>[__<op>]`` (or,
    with prefix "", a filter's own keys); operator "eq" when none is given. `workflow`: the one workflow
    searched, when known: then only its search paths may be named. InvalidData naming each bad filter."""
    known = list(workflow.get("search") or []) if workflow is not None else None
    found: list[tuple[str, str, Any]] = []
    errors: dict[str, list[str]] = {}
    for name, raw in arguments:
        if not name.startswith(prefix):
            continue
        path, operator = name[len(prefix):], "eq"
        head, _, tail = path.rpartition("__")
        if head and tail in OPERATORS:
            path, operator = head, tail
        elif head and (known is None or path not in known):
            errors[name] = [f"unknown operator __{tail}: use one of " + ", ".join(f"__{op}" for op in OPERATORS)]
            continue
        if not 0 < len(path) <= MAX_PATH_LENGTH:
            errors[name] = [f"name a search path of 1 to {MAX_PATH_LENGTH} characters after {prefix or 'the key'}"]
            continue
        if known is not None and path not in known:
            errors[name] = [f"{path!r} is not a search path of this workflow; it declares: "
                            + (", ".join(known) or "none")]
            continue
        if isinstance(raw, str):
            value = parse_value(raw)
        elif searchable(raw):
            value = raw
        else:
            errors[name] = ["a string, a number or a boolean"]
            continue
        if isinstance(value, str) and len(value) > MAX_VALUE:
            errors[name] = [f"at most {MAX_VALUE} characters"]
            continue
        found.append((path, operator, value))
    if len(found) > MAX_FILTERS:
        errors["attr"] = [f"at most {MAX_FILTERS} attribute filters, got {len(found)}"]
    if errors:
        listed = "; ".join(f"{name}: {problems[0]}" for name, problems in errors.items())
        raise InvalidData(f"bad search filter: {listed}", errors=errors)
    return found

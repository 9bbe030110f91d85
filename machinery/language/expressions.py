"""JMESPath expressions of the step tree: compiled once, and their result type inferred over a context.

``compile_expression(text)`` parses an expression (a syntax error, an unknown function or a wrong
number of arguments is an ``ExpressionError`` naming the column or the function); ``infer(expr,
context)`` walks the parsed tree over the context's types (``{key: {"type", "required"}}``) and
returns the type of the result and the problems found, each naming the path it is about
(``order.totl: no field 'totl'; order has id, total, lines``). What cannot be known is ``any``,
checked at run time.
"""

from __future__ import annotations

import functools
from typing import Any, Mapping

import jmespath
import jmespath.exceptions
import jmespath.functions
from jmespath.parser import Parser

from machinery.language import types

MAX_SOURCE = 2000
MAX_NESTING = 64
_FUNCTIONS = jmespath.functions.Functions().FUNCTION_TABLE
_ORDERING = {"lt": "<", "lte": "<=", "gt": ">", "gte": ">="}
_EQUALITY = {"eq": "==", "ne": "!="}


class ExpressionError(ValueError):
    """An expression that does not compile, or that failed at run time; the message says where."""


def _type(kind: str, *, nullable: bool = False, items: dict | None = None, fields: list | None = None) -> dict:
    return {"type": kind, "nullable": nullable, "enum": None, "items": items, "fields": fields}


ANY = _type("any")
BOOL = _type("bool")
INT = _type("int")
FLOAT = _type("float")
STRING = _type("string")


def _nullable(node: dict, nullable: bool = True) -> dict:
    if not nullable or node["type"] == "any" or node["nullable"]:
        return node
    return {**node, "nullable": True}


def _strict(node: dict) -> dict:
    return {**node, "nullable": False} if node["nullable"] else node


def join(first: dict, second: dict) -> dict:
    """The narrowest type both types fit: the wider of the two when one fits the other, else ``any``."""
    nullable = first["nullable"] or second["nullable"]
    a, b = _strict(first), _strict(second)
    if not types.incompatibilities(a, b):
        return _nullable(b, nullable)
    if not types.incompatibilities(b, a):
        return _nullable(a, nullable)
    if a["type"] == b["type"] and a["type"] in ("array", "object"):
        return _nullable(_type(a["type"]), nullable)
    return ANY


def context_type(context: Mapping[str, Mapping[str, Any]]) -> dict:
    """The context as an object type: each key a field, optional where the key may be absent."""
    return _type("object", fields=[{"name": key, "type": types.normal_type(slot["type"]),
                                    "required": bool(slot.get("required", True))}
                                   for key, slot in context.items()])


def field_path(parsed: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The names of an expression that only reads fields (`item`, `order.total`), in order; None for
    any other expression."""
    kind = parsed.get("type")
    if kind == "field":
        return (parsed["value"],)
    if kind == "subexpression":
        names: tuple[str, ...] = ()
        for child in parsed["children"]:
            part = field_path(child)
            if part is None:
                return None
            names += part
        return names
    return None


class Expression:
    """A compiled expression: `text` its source, `parsed` its tree, `search(value)` its evaluation.
    One that only reads fields (most of a plan's: an input named after a context key, `item`,
    `order.total`) is walked through the objects directly, as JMESPath walks them (a field of
    anything but an object is null), without its interpreter: that was most of a map item's
    reading of its inputs."""

    __slots__ = ("text", "parsed", "_compiled", "_path")

    def __init__(self, text: str, parsed: dict, compiled: Any):
        self.text, self.parsed, self._compiled = text, parsed, compiled
        self._path = field_path(parsed)

    def search(self, value: Any) -> Any:
        path = self._path
        if path is not None:
            found = value
            for name in path:
                if type(found) is dict:
                    found = found.get(name)
                elif found is None:
                    return None
                else:
                    break  # something else (a list, a mapping of another type): JMESPath says
            else:
                return found
        try:
            return self._compiled.search(value)
        except jmespath.exceptions.JMESPathError as error:
            raise ExpressionError(f"{self.text}: {_plain(error)}") from None
        except (TypeError, ValueError, ArithmeticError) as error:
            raise ExpressionError(f"{self.text}: {error}") from None

    def __repr__(self) -> str:
        return f"Expression({self.text!r})"


def _plain(error: Exception) -> str:
    return " ".join(str(error).split())


def compile_expression(text: str) -> Expression:
    """Compile an expression once; raise ExpressionError naming the column of a syntax error."""
    if not isinstance(text, str):
        raise ExpressionError(f"an expression is a string of JMESPath, got {types.json_type(text)}")
    return _compile(text)


@functools.lru_cache(maxsize=4096)
def _compile(text: str) -> Expression:
    if not text.strip():
        raise ExpressionError("an expression may not be empty")
    if len(text) > MAX_SOURCE:
        raise ExpressionError(f"an expression holds at most {MAX_SOURCE} characters, this one {len(text)}")
    try:
        parsed = Parser().parse(text).parsed
        compiled = jmespath.compile(text)
    except jmespath.exceptions.ParseError as error:
        column = getattr(error, "lex_position", None)
        where = f"column {column + 1}: " if isinstance(column, int) else ""
        reason = getattr(error, "msg", None) or _plain(error)
        token = getattr(error, "token_value", None)
        near = f" (at {token!r})" if token not in (None, "") else ""
        raise ExpressionError(f"{text!r} does not parse: {where}{reason}{near}") from None
    except jmespath.exceptions.JMESPathError as error:
        raise ExpressionError(f"{text!r} does not parse: {_plain(error)}") from None
    except RecursionError:
        raise ExpressionError(f"{text!r} nests too deeply") from None
    _check_functions(text, parsed, 0)
    return Expression(text, parsed, compiled)


def _check_functions(text: str, node: Any, depth: int) -> None:
    if not isinstance(node, dict):
        return
    if depth > MAX_NESTING:
        raise ExpressionError(f"{text!r} nests deeper than {MAX_NESTING} levels")
    if node.get("type") == "function_expression":
        name, count = node["value"], len(node["children"])
        entry = _FUNCTIONS.get(name)
        if entry is None:
            raise ExpressionError(f"{text!r}: unknown function {name}(); known functions: "
                                  + ", ".join(sorted(_FUNCTIONS)))
        signature = entry["signature"]
        variadic = bool(signature and signature[-1].get("variadic"))
        if (count < len(signature)) if variadic else (count != len(signature)):
            wanted = f"at least {len(signature)}" if variadic else str(len(signature))
            plural = "" if len(signature) == 1 else "s"
            raise ExpressionError(f"{text!r}: {name}() takes {wanted} argument{plural}, got {count}")
    for child in node.get("children") or ():
        _check_functions(text, child, depth + 1)


def infer(expression: Expression | str, context: Mapping[str, Mapping[str, Any]]) -> tuple[dict, list[str]]:
    """The normal type of the expression's result over a context, and the problems found (strings)."""
    if isinstance(expression, str):
        try:
            expression = compile_expression(expression)
        except ExpressionError as error:
            return ANY, [str(error)]
    walker = _Walker()
    try:
        result, _ = walker.walk(expression.parsed, context_type(context), "", 0)
    except RecursionError:
        return ANY, [f"{expression.text!r} nests too deeply"]
    return result, walker.problems


def infer_over(expression: Expression, current: dict) -> tuple[dict, list[str]]:
    """Like `infer`, over a value of a given normal type instead of a context."""
    walker = _Walker()
    result, _ = walker.walk(expression.parsed, current, "", 0)
    return result, walker.problems


def _literal(value: Any) -> dict:
    if value is None:
        return _type("any", nullable=True)
    if isinstance(value, bool):
        return BOOL
    if isinstance(value, int):
        return INT
    if isinstance(value, float):
        return FLOAT
    if isinstance(value, str):
        # A literal is exactly its value: 'mail' fits an input that takes only "mail" or "sms".
        return {**STRING, "enum": [value]}
    if isinstance(value, list):
        items = None
        for item in value[:50]:
            kind = _literal(item)
            items = kind if items is None else join(items, kind)
        return _type("array", items=items if len(value) <= 50 else None)
    if isinstance(value, dict):
        if len(value) > 50:
            return _type("object")
        return _type("object", fields=[{"name": str(key), "type": _literal(item), "required": True}
                                       for key, item in value.items()])
    return ANY


def _is(node: dict, *kinds: str) -> bool:
    return node["type"] in kinds


def _items(node: dict) -> dict:
    return node["items"] if node["items"] is not None else ANY


def _array(items: dict | None, nullable: bool = False) -> dict:
    return _type("array", items=items, nullable=nullable)


def _step(path: str, suffix: str) -> str:
    return f"{path}{suffix}" if suffix.startswith("[") or not path else f"{path}.{suffix}"


class _Walker:
    def __init__(self) -> None:
        self.problems: list[str] = []

    def problem(self, text: str) -> dict:
        if text not in self.problems:
            self.problems.append(text)
        return ANY

    def walk(self, node: dict, current: dict, path: str, depth: int) -> tuple[dict, str]:
        if depth > MAX_NESTING:
            return self.problem(f"{path or 'expression'}: nests deeper than {MAX_NESTING} levels"), path
        kind = node["type"]
        method = getattr(self, "_" + kind, None)
        if method is None:
            return ANY, path
        return method(node, current, path, depth + 1)

    # -- selecting ---------------------------------------------------------------------------------

    def _field(self, node, current, path, depth):
        name = node["value"]
        here = _step(path, name)
        if current["type"] == "any":
            return ANY, here
        if current["type"] != "object":
            return self.problem(f"{here}: {path or 'the value'} is {types.describe(current)}, "
                                f"which has no fields"), here
        if current["fields"] is None:
            return ANY, here
        for field in current["fields"]:
            if field["name"] == name:
                result = types.normal_type(field["type"])
                return _nullable(result, current["nullable"] or not field["required"]), here
        names = ", ".join(field["name"] for field in current["fields"][:20]) or "nothing"
        if len(current["fields"]) > 20:
            names += ", …"
        owner = f"{path} has" if path else "the context has"
        return self.problem(f"{here}: no field {name!r}; {owner} {names}"), here

    def _subexpression(self, node, current, path, depth):
        for child in node["children"]:
            current, path = self.walk(child, current, path, depth)
        return current, path

    def _identity(self, node, current, path, depth):
        return current, path

    _current = _identity

    def _index_expression(self, node, current, path, depth):
        left, right = node["children"]
        current, path = self.walk(left, current, path, depth)
        return self.walk(right, current, path, depth)

    def _index(self, node, current, path, depth):
        here = f"{path}[{node['value']}]"
        if current["type"] == "any":
            return ANY, here
        if current["type"] != "array":
            return self.problem(f"{here}: {path or 'the value'} is {types.describe(current)}, "
                                f"not an array"), here
        return _nullable(_items(current)), here

    def _slice(self, node, current, path, depth):
        here = f"{path}[{':'.join('' if part is None else str(part) for part in node['children'])}]"
        if current["type"] == "any":
            return ANY, here
        if current["type"] == "string":
            return current, here
        if current["type"] != "array":
            return self.problem(f"{here}: {path or 'the value'} is {types.describe(current)}, "
                                f"not an array"), here
        return current, here

    def _projection(self, node, current, path, depth):
        left, right = node["children"]
        source, where = self.walk(left, current, path, depth)
        if source["type"] == "any":
            item, item_path = ANY, f"{where}[]"
        elif source["type"] != "array":
            return self.problem(f"{where}[*]: {where or 'the value'} is {types.describe(source)}, "
                                f"not an array"), where
        else:
            item, item_path = _items(source), f"{where}[]"
        result, _ = self.walk(right, item, item_path, depth)
        # A projection leaves out the items whose result is null.
        return _array(_strict(result) if result["type"] != "any" else None, source["nullable"]), item_path

    def _value_projection(self, node, current, path, depth):
        left, right = node["children"]
        source, where = self.walk(left, current, path, depth)
        if source["type"] == "any" or source["fields"] is None and source["type"] == "object":
            item = ANY
        elif source["type"] != "object":
            return self.problem(f"{where}.*: {where or 'the value'} is {types.describe(source)}, "
                                f"not an object"), where
        else:
            item = None
            for field in source["fields"]:
                item = field["type"] if item is None else join(item, field["type"])
            item = item or ANY
        result, _ = self.walk(right, item, f"{where}.*", depth)
        return _array(_strict(result) if result["type"] != "any" else None, source["nullable"]), f"{where}.*"

    def _filter_projection(self, node, current, path, depth):
        left, right, condition = node["children"]
        source, where = self.walk(left, current, path, depth)
        if source["type"] == "any":
            item = ANY
        elif source["type"] != "array":
            return self.problem(f"{where}[?]: {where or 'the value'} is {types.describe(source)}, "
                                f"not an array"), where
        else:
            item = _items(source)
        self.walk(condition, item, f"{where}[]", depth)
        result, _ = self.walk(right, item, f"{where}[]", depth)
        return _array(_strict(result) if result["type"] != "any" else None, source["nullable"]), f"{where}[]"

    def _flatten(self, node, current, path, depth):
        (child,) = node["children"]
        source, where = self.walk(child, current, path, depth)
        if source["type"] == "any":
            return _array(None), f"{where}[]"
        if source["type"] != "array":
            return self.problem(f"{where}[]: {where or 'the value'} is {types.describe(source)}, "
                                f"not an array"), where
        item = _items(source)
        if item["type"] == "array":
            return _array(item["items"], source["nullable"]), f"{where}[]"
        if item["type"] == "any":
            return _array(None, source["nullable"]), f"{where}[]"
        return _array(item, source["nullable"]), f"{where}[]"

    def _pipe(self, node, current, path, depth):
        left, right = node["children"]
        current, path = self.walk(left, current, path, depth)
        return self.walk(right, current, path, depth)

    def _literal(self, node, current, path, depth):
        return _literal(node["value"]), repr(node["value"])

    def _multi_select_list(self, node, current, path, depth):
        items = None
        for child in node["children"]:
            kind, _ = self.walk(child, current, path, depth)
            items = kind if items is None else join(items, kind)
        return _array(items, current["nullable"]), path

    def _multi_select_dict(self, node, current, path, depth):
        fields = []
        for pair in node["children"]:
            kind, _ = self.walk(pair["children"][0], current, path, depth)
            fields.append({"name": pair["value"], "type": kind, "required": True})
        return _type("object", fields=fields, nullable=current["nullable"]), path

    # -- logic -------------------------------------------------------------------------------------

    def _comparator(self, node, current, path, depth):
        left, right = node["children"]
        first, first_path = self.walk(left, current, path, depth)
        second, second_path = self.walk(right, current, path, depth)
        operator = _ORDERING.get(node["value"])
        if operator is None:
            return BOOL, path
        if "any" in (first["type"], second["type"]):
            return BOOL, path
        numbers = _is(first, "int", "float") and _is(second, "int", "float")
        strings = _is(first, "string") and _is(second, "string")
        if not (numbers or strings):
            self.problem(
                f"{first_path or 'value'} {operator} {second_path or 'value'}: compares "
                f"{types.describe(first)} with {types.describe(second)}; {', '.join(_ORDERING.values())} "
                f"compare two numbers or two strings")
            return BOOL, path
        return _nullable(BOOL, first["nullable"] or second["nullable"]), path

    def _and_expression(self, node, current, path, depth):
        left, right = node["children"]
        first, _ = self.walk(left, current, path, depth)
        second, _ = self.walk(right, current, path, depth)
        if _is(first, "bool") and _is(second, "bool"):
            return _nullable(BOOL, first["nullable"] or second["nullable"]), path
        return join(first, second), path

    def _or_expression(self, node, current, path, depth):
        # `a || b` is a when a is truthy, else b: null only when b may be, so `note || 'none'` is never null.
        left, right = node["children"]
        first, _ = self.walk(left, current, path, depth)
        second, _ = self.walk(right, current, path, depth)
        if _is(first, "bool") and _is(second, "bool"):
            return _nullable(BOOL, second["nullable"]), path
        return join(_strict(first), second), path

    def _not_expression(self, node, current, path, depth):
        self.walk(node["children"][0], current, path, depth)
        return BOOL, path

    def _expref(self, node, current, path, depth):
        return ANY, path

    def _function_expression(self, node, current, path, depth):
        name = node["value"]
        children = node["children"]
        if name in ("map", "sort_by", "max_by", "min_by"):
            return self._by(name, children, current, path, depth)
        args = [self.walk(child, current, path, depth)[0] for child in children]
        first = args[0] if args else ANY
        if name == "length":
            return INT, path
        if name in ("contains", "starts_with", "ends_with"):
            return BOOL, path
        if name in ("to_string", "join", "type"):
            return STRING, path
        if name == "to_number":
            if _is(first, "int"):
                return _nullable(INT, first["nullable"]), path
            return _nullable(FLOAT), path
        if name in ("sum", "avg"):
            items = _items(first) if _is(first, "array") else ANY
            if name == "sum" and _is(items, "int"):
                return INT, path
            return (FLOAT if name == "sum" else _nullable(FLOAT)), path
        if name == "keys":
            return _array(STRING), path
        if name in ("max", "min"):
            if _is(first, "array") and first["items"] is not None:
                return _nullable(_strict(first["items"])), path
            return ANY, path
        if name == "abs":
            return (first if _is(first, "int", "float") else ANY), path
        if name in ("ceil", "floor"):
            return (INT if _is(first, "int", "float") else ANY), path
        if name in ("sort", "reverse"):
            return first, path
        if name == "not_null":
            # The first argument that is not null: null only when every one may be.
            known = [arg for arg in args if arg["type"] != "any"]
            result = None
            for arg in known:
                result = _strict(arg) if result is None else join(result, _strict(arg))
            if result is None or len(known) != len(args):
                return ANY, path
            return _nullable(result, all(arg["nullable"] for arg in args)), path
        if name == "merge":
            return _type("object"), path
        if name == "to_array":
            return (first if _is(first, "array") else _array(first if first["type"] != "any" else None)), path
        if name == "values":
            return _array(None), path
        return ANY, path

    def _by(self, name, children, current, path, depth):
        if name == "map":
            ref, source = children
        else:
            source, ref = children
        array, where = self.walk(source, current, path, depth)
        item = _items(array) if _is(array, "array") else ANY
        if array["type"] not in ("array", "any"):
            self.problem(f"{where or 'argument'}: {name}() needs an array, got {types.describe(array)}")
        result = ANY
        if ref["type"] == "expref":
            result, _ = self.walk(ref["children"][0], item, f"{where}[]", depth)
        if name == "map":
            return _array(result if result["type"] != "any" else None), path
        if name == "sort_by":
            return array, path
        return _nullable(item), path


def boolean(node: dict) -> bool:
    """Whether a type is a condition's: ``bool`` (null counts as false) or ``any``, checked at run time."""
    return node["type"] in ("bool", "any")

"""Read request bodies as strict JSON or YAML: one place decides what a readable body is.

JSON and YAML bodies obey the same rules: UTF-8, no duplicate keys, whole numbers of 64 bits,
finite numbers, at most MAX_DEPTH levels deep. YAML is read with PyYAML's safe loader, and anchors
and aliases are bounded (MAX_ALIASES uses, MAX_NODES values once expanded), so that a small
document cannot expand into a huge one.
"""

from __future__ import annotations

import json
import math
from typing import Any

import flask_smorest
import yaml
from flask import Request
from webargs.flaskparser import FlaskParser, is_json_request

from machinery import guard
from machinery.exceptions import MachineryError
from machinery.language import plan

# Deep enough for every step tree the check accepts (16 levels of switch cases) and for one a level
# too deep to be refused by the check naming its path; a deeper body is no definition.
MAX_DEPTH = plan.JSON_DEPTH
INT64_DIGITS = 19  # a longer literal cannot be a 64-bit whole number; Python would also refuse past 4,300


class BadBody(MachineryError):
    """The body cannot be read as JSON; `status` is 400 or 415."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


def _no_duplicates(pairs):
    result = {}
    for key, value in pairs:
        if key in result:
            raise BadBody(f"malformed JSON: key {key!r} appears twice in one object")
        result[key] = value
    return result


def _no_constants(name):
    raise BadBody(f"malformed JSON: {name} is not a JSON number")


def _whole_number(text: str) -> int:
    # Larger numbers cannot be stored (MongoDB keeps 64-bit integers): refuse them here, on every store alike.
    number = int(text) if len(text.lstrip("-")) <= INT64_DIGITS else None
    if number is None or not -(2 ** 63) <= number < 2 ** 63:
        raise BadBody(f"the whole number {text[:30]}{'...' if len(text) > 30 else ''} is out of range: "
                      "at most 64 bits (-2^63 to 2^63-1)")
    return number


def _finite_number(text: str) -> float:
    number = float(text)
    if not math.isfinite(number):
        raise BadBody(f"the number {text[:30]}{'...' if len(text) > 30 else ''} is out of range of a 64-bit float")
    return number


def _lone_surrogate(value: Any) -> bool:
    """Whether a string anywhere in a value (keys too) holds a lone surrogate such as \\ud800."""
    stack = [value]
    while stack:
        item = stack.pop()
        texts = ()
        if isinstance(item, dict):
            texts = item.keys()
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
        elif isinstance(item, str):
            texts = (item,)
        if not all(guard.valid_unicode(text) for text in texts):
            return True
    return False


def _depth(value: Any) -> int:
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            children = item.values() if isinstance(item, dict) else item
            stack.extend((child, depth + 1) for child in children)
    return deepest


def parse_json(raw: bytes) -> Any:
    """Parse bytes as strict JSON (UTF-8, no duplicate keys, no NaN, at most MAX_DEPTH deep)."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadBody("malformed JSON: the body is not UTF-8") from None
    if not text.strip():
        raise BadBody("the request body is empty; send a JSON object")
    try:
        value = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constants,
                           parse_int=_whole_number, parse_float=_finite_number)
    except json.JSONDecodeError as error:
        raise BadBody(f"malformed JSON: {error.msg} at line {error.lineno} column {error.colno}") from None
    except RecursionError:
        raise BadBody(f"the JSON body is nested more than {MAX_DEPTH} levels deep") from None
    # Each level opens with a bracket, and only a \u escape can make a lone surrogate (UTF-8 cannot
    # hold one): a body with few brackets, or no escape, needs no walk for either.
    if text.count("{") + text.count("[") > MAX_DEPTH and _depth(value) > MAX_DEPTH:
        raise BadBody(f"the JSON body is nested more than {MAX_DEPTH} levels deep")
    if "\\u" in text and _lone_surrogate(value):
        raise BadBody("malformed JSON: a \\u escape names a lone surrogate, which is not Unicode text")
    return value


YAML_TYPES = frozenset({"application/yaml", "application/x-yaml", "text/yaml", "text/x-yaml"})
MAX_ALIASES = 100  # alias uses in one document: enough for shared fragments, far from a "billion laughs"
MAX_NODES = 500_000  # values in a YAML document once its aliases are expanded (1 MiB of JSON holds fewer)


def is_yaml_mimetype(mimetype: str | None) -> bool:
    return (mimetype or "").lower() in YAML_TYPES


def read_body(request: Request) -> Any:
    """The request's body as JSON or YAML (by its Content-Type), or BadBody (415 for another type)."""
    raw = request.get_data(cache=True)
    if is_yaml_mimetype(request.mimetype):
        return parse_yaml(raw)
    if not is_json_request(request):
        if raw.strip():
            raise BadBody(f"the body must be JSON sent as application/json (or YAML sent as application/yaml), "
                          f"not {request.mimetype or 'no content type'}", status=415)
        raise BadBody("the request body is empty; send a JSON object")
    return parse_json(raw)


# Every reader of a request body goes through read_body; the old name stays for the views using it.
read_json = read_body


def _mark(node_or_mark) -> str:
    mark = getattr(node_or_mark, "start_mark", node_or_mark)
    return f"line {mark.line + 1} column {mark.column + 1}" if mark is not None else "somewhere"


class _StrictYAMLConstructor(yaml.constructor.SafeConstructor):
    """PyYAML's safe constructor held to the JSON rules: JSON values only, each problem named by position."""

    def construct_mapping(self, node, deep=False):
        if isinstance(node, yaml.MappingNode):
            seen = set()
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":
                    continue
                key = self.construct_object(key_node, deep=True)
                if isinstance(key, int) and not isinstance(key, bool):
                    key = str(key)  # `200:` in an OpenAPI document's responses means the string "200"
                if not isinstance(key, str):
                    raise BadBody(f"malformed YAML: a key must be a string, not {key!r}, at {_mark(key_node)} "
                                  "(quote it)")
                if key in seen:
                    raise BadBody(f"malformed YAML: key {key!r} appears twice in one mapping, at {_mark(key_node)}")
                seen.add(key)
        mapping = super().construct_mapping(node, deep=deep)
        return {str(key) if isinstance(key, int) and not isinstance(key, bool) else key: value
                for key, value in mapping.items()}

    def construct_yaml_int(self, node):
        number = super().construct_yaml_int(node)
        if not -(2 ** 63) <= number < 2 ** 63:
            raise BadBody(f"the whole number at {_mark(node)} is out of range: at most 64 bits (-2^63 to 2^63-1)")
        return number

    def construct_yaml_float(self, node):
        number = super().construct_yaml_float(node)
        if not math.isfinite(number):
            raise BadBody(f"the number {node.value[:30]!r} at {_mark(node)} is not a finite number")
        return number

    def construct_plain_text(self, node):
        # A date or time stays the text it was written as: JSON has no timestamps.
        return self.construct_scalar(node)

    def construct_not_json(self, node):
        raise BadBody(f"malformed YAML: {node.tag} at {_mark(node)} is not a JSON value")


for _tag, _method in (("int", "construct_yaml_int"), ("float", "construct_yaml_float"),
                      ("timestamp", "construct_plain_text"), ("binary", "construct_not_json"),
                      ("set", "construct_not_json"), ("omap", "construct_not_json"),
                      ("pairs", "construct_not_json")):
    _StrictYAMLConstructor.add_constructor(f"tag:yaml.org,2002:{_tag}", getattr(_StrictYAMLConstructor, _method))
_StrictYAMLConstructor.add_constructor(None, _StrictYAMLConstructor.construct_not_json)

# libyaml's parser when PyYAML has it (fast, and it bounds nesting itself); the pure-Python one otherwise.
_PARSING = ((yaml.CParser,) if hasattr(yaml, "CParser") else
            (yaml.reader.Reader, yaml.scanner.Scanner, yaml.parser.Parser, yaml.composer.Composer))


class _StrictYAMLLoader(*_PARSING, _StrictYAMLConstructor, yaml.resolver.Resolver):
    def __init__(self, stream):
        _PARSING[0].__init__(self, stream)
        for base in _PARSING[1:]:
            base.__init__(self)
        _StrictYAMLConstructor.__init__(self)
        yaml.resolver.Resolver.__init__(self)


def _check_expansion(root) -> None:
    """Refuse a node graph that aliases too often, refers to itself, or expands too large or too deep.

    An alias is the same node object met again: the walk counts those, and sizes each node once
    (memoised), so the check costs what the document's text does, not what it expands to.
    """
    aliases = 0
    size: dict[int, int] = {}
    depth: dict[int, int] = {}
    on_path: set[int] = set()
    stack = [(root, False)]
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if children_done:
            on_path.discard(key)
            kids = _children(node)
            size[key] = 1 + sum(size[id(kid)] for kid in kids)
            depth[key] = (1 + max((depth[id(kid)] for kid in kids), default=0)) if kids or not isinstance(
                node, yaml.ScalarNode) else 0
            if size[key] > MAX_NODES:
                raise BadBody(f"the YAML document expands past {MAX_NODES} values once its aliases are "
                              f"expanded (at {_mark(node)}); write it out without anchors and aliases")
            if depth[key] > MAX_DEPTH:
                raise BadBody(f"the YAML body is nested more than {MAX_DEPTH} levels deep (at {_mark(node)})")
            continue
        if key in on_path:
            raise BadBody(f"malformed YAML: the alias at {_mark(node)} refers to a value holding itself")
        if key in size:
            aliases += 1
            if aliases > MAX_ALIASES:
                raise BadBody(f"the YAML document uses aliases more than {MAX_ALIASES} times (at {_mark(node)}); "
                              "write it out without anchors and aliases")
            continue
        on_path.add(key)
        stack.append((node, True))
        stack.extend((kid, False) for kid in _children(node))


def _children(node) -> list:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [item for pair in node.value for item in pair]
    return []


def _yaml_documents(raw: bytes) -> list[Any]:
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise BadBody("malformed YAML: the body is not UTF-8") from None
    loader = _StrictYAMLLoader(text)
    documents = []
    try:
        while loader.check_node():
            node = loader.get_node()
            if node is None:
                continue
            _check_expansion(node)
            documents.append(loader.construct_document(node))
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f" at {_mark(mark)}" if mark is not None else ""
        raise BadBody(f"malformed YAML: {error.problem or error.context}{where}") from None
    except yaml.YAMLError as error:
        raise BadBody(f"malformed YAML: {str(error).splitlines()[0]}") from None
    except RecursionError:
        raise BadBody(f"the YAML body is nested more than {MAX_DEPTH} levels deep") from None
    finally:
        loader.dispose()
    for value in documents:
        if _lone_surrogate(value):
            raise BadBody("malformed YAML: an escape names a lone surrogate, which is not Unicode text")
    return documents


def parse_yaml(raw: bytes) -> Any:
    """Parse bytes as one YAML document under the JSON rules; anchors and aliases bounded."""
    documents = _yaml_documents(raw)
    if not documents:
        raise BadBody("the request body is empty; send a YAML mapping")
    if len(documents) > 1:
        raise BadBody(f"the YAML body holds {len(documents)} documents; send one")
    return documents[0]


def parse_yaml_documents(raw: bytes) -> list[Any]:
    """Every document of a YAML stream (separated by ---), each under the same rules as parse_yaml."""
    return _yaml_documents(raw)


class StrictParser(FlaskParser):
    """webargs' Flask parser with our JSON rules for the `json` location."""

    def _raw_load_json(self, req: Request) -> Any:
        return read_body(req)

    def load_json(self, req: Request, schema) -> Any:
        # webargs caches and swallows decode errors here; ours must reach the error handler.
        return self._raw_load_json(req)



class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint reading bodies with the strict parser."""

    ARGUMENTS_PARSER = StrictParser()


def page(items: list, total: int, args: dict) -> dict:
    """The page envelope every list endpoint answers with."""
    return {"items": items, "page": args["page"], "page_size": args["page_size"], "total": total}

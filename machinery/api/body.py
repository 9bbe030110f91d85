"""Read request bodies as strict JSON: one place decides what a readable body is."""

from __future__ import annotations

import json
import math
from typing import Any

import flask_smorest
from flask import Request
from webargs.flaskparser import FlaskParser, is_json_request

from machinery import guard
from machinery.exceptions import MachineryError

MAX_DEPTH = 32
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
    if _depth(value) > MAX_DEPTH:
        raise BadBody(f"the JSON body is nested more than {MAX_DEPTH} levels deep")
    if _lone_surrogate(value):
        raise BadBody("malformed JSON: a \\u escape names a lone surrogate, which is not Unicode text")
    return value


def read_json(request: Request) -> Any:
    """The request's body as JSON, or BadBody (415 for another content type)."""
    raw = request.get_data(cache=True)
    if not is_json_request(request):
        if raw.strip():
            raise BadBody(f"the body must be JSON sent as application/json, not "
                          f"{request.mimetype or 'no content type'}", status=415)
        raise BadBody("the request body is empty; send a JSON object")
    return parse_json(raw)


class StrictParser(FlaskParser):
    """webargs' Flask parser with our JSON rules for the `json` location."""

    def _raw_load_json(self, req: Request) -> Any:
        return read_json(req)

    def load_json(self, req: Request, schema) -> Any:
        # webargs caches and swallows decode errors here; ours must reach the error handler.
        return self._raw_load_json(req)



class Blueprint(flask_smorest.Blueprint):
    """flask-smorest's Blueprint reading bodies with the strict parser."""

    ARGUMENTS_PARSER = StrictParser()


def page(items: list, total: int, args: dict) -> dict:
    """The page envelope every list endpoint answers with."""
    return {"items": items, "page": args["page"], "page_size": args["page_size"], "total": total}

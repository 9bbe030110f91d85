"""Services as any HTTP endpoint: check a service's `request`, `success` and outputs' `from` at
registration, compile them once per plan, build each call's request and read its reply.

A compiled `Call` is kept by the service's fingerprint (a digest of what it compiles from, put in the
service definition when it is registered and so in every plan), so an event read back from the store
finds the same compiled form as the sync event that stored it: a call builds strings and evaluates
compiled expressions, it never parses a template or an expression.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import quote, urlsplit

import jmespath
import jmespath.exceptions
from requests.utils import requote_uri

from machinery.exceptions import InvalidData, ServiceCallError
from machinery.language import expressions, types
from machinery.runtime.transport import DEFAULT_HEADERS

METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")
BODY_METHODS = frozenset({"POST", "PUT", "PATCH"})
# RFC 6570 variable names (no pct-encoded ones): what an input placed in a template must be called.
VARIABLE = re.compile(r"[A-Za-z0-9_]+\Z")
SECRET_NAME = re.compile(r"[A-Za-z0-9_]{1,100}\Z")
TOKEN = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]+\Z")  # RFC 9110 token: what a header name is
# Set by Machinery or by the connection: a service's headers may not say otherwise.
FORBIDDEN_HEADERS = frozenset({"host", "content-length", "transfer-encoding", "connection", "accept-encoding"})
FORBIDDEN_PREFIX = "x-machinery-"
SCALARS = frozenset({"string", "int", "float", "bool", "any"})
VIEW_KEYS = ("status", "headers", "body")
MASK = "***"
CACHE_SIZE = 1024


def is_v2(service: Mapping[str, Any]) -> bool:
    """Whether a definition says anything version 1 cannot: a request, success statuses, or an output's `from`."""
    return bool(service.get("request") or service.get("success")
                or any(field.get("from") for field in service.get("outputs") or ()))


# -- types of fields, whichever form they take ------------------------------------------------

def kind(field: Mapping[str, Any]) -> str:
    """The top-level kind of a field's type: a name, or a structure's `type`; `any` when unknown."""
    declared = field.get("type")
    if isinstance(declared, Mapping):
        declared = declared.get("type")
    try:
        return types.canonical(declared)
    except ValueError:
        return "any"


def optional(field: Mapping[str, Any]) -> bool:
    return field.get("required", True) is False


# -- templates -----------------------------------------------------------------------------

class TemplateError(ValueError):
    """A template that does not parse; `position` is the 0-based offset of the problem."""

    def __init__(self, message: str, position: int):
        super().__init__(message)
        self.position = position


@dataclass(frozen=True)
class Template:
    """A parsed template: literal text and placeholders, ("input", name) or ("secret", name)."""

    text: str
    parts: tuple

    @property
    def inputs(self) -> list[str]:
        return [value for part, value in self.parts if part == "input"]

    @property
    def secrets(self) -> list[str]:
        return [value for part, value in self.parts if part == "secret"]


def parse_template(text: str, secrets_allowed: bool) -> Template:
    """Parse `text` with `{input}` (and, where allowed, `{secret.NAME}`) placeholders, RFC 6570 simple
    expansions only. Raises TemplateError naming the position."""
    parts: list[tuple[str, str]] = []
    literal_start = 0
    position = 0
    while position < len(text):
        char = text[position]
        if char == "}":
            raise TemplateError(f"'}}' at position {position} closes no placeholder", position)
        if char != "{":
            position += 1
            continue
        end = text.find("}", position + 1)
        opening = text.find("{", position + 1)
        if end < 0 or (0 <= opening < end):
            raise TemplateError(f"'{{' at position {position} is never closed", position)
        name = text[position + 1:end]
        if position > literal_start:
            parts.append(("text", text[literal_start:position]))
        if not name:
            raise TemplateError(f"empty placeholder '{{}}' at position {position}", position)
        if name.startswith("secret."):
            secret = name[len("secret."):]
            if not secrets_allowed:
                raise TemplateError(f"placeholder {{{name}}} at position {position}: secrets go only in headers",
                                    position)
            if not SECRET_NAME.match(secret):
                raise TemplateError(f"placeholder {{{name}}} at position {position}: a secret's name holds only "
                                    "letters, digits and '_'", position)
            parts.append(("secret", secret))
        elif VARIABLE.match(name):
            parts.append(("input", name))
        elif name[0] in "+#./;?&=,!@|":
            raise TemplateError(f"placeholder {{{name}}} at position {position}: only simple expansion "
                                "{name} is supported", position)
        else:
            raise TemplateError(f"placeholder {{{name}}} at position {position} is not a name: an input's "
                                "name in a template holds only letters, digits and '_'", position)
        position = end + 1
        literal_start = position
    if literal_start < len(text):
        parts.append(("text", text[literal_start:]))
    return Template(text, tuple(parts))


# -- values in a URL and in headers --------------------------------------------------------

def scalar_text(value: Any) -> str | None:
    """A scalar as it goes into a URL or a header (JSON's spelling of true, false and numbers);
    None for a value that is no scalar."""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return json.dumps(value)
    return None


def encode(text: str) -> str:
    """RFC 6570 simple expansion of a value: everything outside the unreserved set percent-encoded
    (UTF-8), `/` included."""
    return quote(text, safe="", encoding="utf-8")


# -- checking a definition -----------------------------------------------------------------

def _compile_expression(expression: str):
    return jmespath.compile(expression)


def _leftmost_field(node: Mapping[str, Any]) -> str | None:
    """The first field an expression reads from its root, when it starts with one."""
    while True:
        if node.get("type") == "field":
            return node.get("value")
        if node.get("type") in ("subexpression", "index_expression", "projection", "value_projection",
                                "filter_projection", "flatten", "pipe") and node.get("children"):
            node = node["children"][0]
            continue
        return None


def _field_path(node: Mapping[str, Any]) -> tuple[str, ...] | None:
    """The keys of an expression that is only fields one inside the other (`body.order.total`), else None."""
    if node.get("type") == "field":
        return (node["value"],)
    if node.get("type") == "subexpression" and all(child.get("type") == "field" for child in node["children"]):
        return tuple(child["value"] for child in node["children"])
    return None


def problems(service: Mapping[str, Any], secret_known: Callable[[str], bool]) -> dict[str, list[str]]:
    """Every problem of a service's request, success statuses and output expressions, by where it is."""
    found: dict[str, list[str]] = {}

    def problem(where: str, message: str) -> None:
        found.setdefault(where, []).append(message)

    inputs = {field["name"]: field for field in service.get("inputs") or ()}
    request = service.get("request") or {}
    method = request.get("method", "POST")
    listed = ", ".join(inputs) or "none"

    def placeholder_input(where: str, name: str, allow_array: bool = False, allow_optional: bool = True) -> None:
        field = inputs.get(name)
        if field is None:
            problem(where, f"{{{name}}} names no declared input (inputs: {listed})")
            return
        allowed = SCALARS | {"array"} if allow_array else SCALARS
        if kind(field) not in allowed:
            problem(where, f"input {name!r} is {kind(field)}: only a scalar input (string, int, float, bool"
                           f"{', or an array of them' if allow_array else ''}) fits here")
        if not allow_optional and optional(field):
            problem(where, f"input {name!r} is optional, but a path needs a value for each placeholder")

    path = request.get("path")
    if path is not None:
        if not path.startswith("/"):
            problem("request.path", "must start with '/'")
        if "?" in path or "#" in path:
            problem("request.path", "must hold no query or fragment: give query parameters in request.query")
        try:
            template = parse_template(path, secrets_allowed=False)
        except TemplateError as error:
            problem("request.path", str(error))
        else:
            for name in template.inputs:
                placeholder_input("request.path", name, allow_optional=False)
    for parameter, name in (request.get("query") or {}).items():
        if name not in inputs:
            problem(f"request.query.{parameter}", f"names no declared input {name!r} (inputs: {listed})")
        elif kind(inputs[name]) not in SCALARS | {"array"}:
            problem(f"request.query.{parameter}", f"input {name!r} is {kind(inputs[name])}: a query parameter "
                                                  "takes a scalar or an array of scalars")
    seen: dict[str, str] = {}
    for header, text in (request.get("headers") or {}).items():
        where = f"request.headers.{header}"
        lowered = header.lower()
        if not TOKEN.match(header):
            problem(where, f"{header!r} is not a valid header name (an RFC 9110 token)")
        elif lowered in FORBIDDEN_HEADERS or lowered.startswith(FORBIDDEN_PREFIX):
            problem(where, f"{header} is set by Machinery or the connection; a service cannot set it")
        if lowered in seen:
            problem(where, f"the same header as {seen[lowered]!r} (header names ignore case)")
        seen[lowered] = header
        if any(char in text for char in "\r\n\x00"):
            problem(where, "a header value cannot hold a line break or NUL")
        try:
            template = parse_template(text, secrets_allowed=True)
        except TemplateError as error:
            problem(where, str(error))
            continue
        for name in template.inputs:
            placeholder_input(where, name)
        for secret in template.secrets:
            if not secret_known(secret):
                problem(where, f"{{secret.{secret}}} names no secret: register it with PUT /secrets/{secret} "
                               f"or set MACHINERY_SECRET_{secret.upper()}")
    if "body" in request:
        body = request["body"]
        if body is not None and method not in BODY_METHODS:
            problem("request.body", f"a {method} request sends no body; place its inputs in the path or query")
        if isinstance(body, str):
            if body not in inputs:
                problem("request.body", f"names no declared input {body!r} (inputs: {listed})")
            elif kind(inputs[body]) not in ("object", "any"):
                problem("request.body", f"input {body!r} is {kind(inputs[body])}: the whole body is one object input")
        elif isinstance(body, list):
            for name in body:
                if name not in inputs:
                    problem("request.body", f"names no declared input {name!r} (inputs: {listed})")
    for number, field in enumerate(service.get("outputs") or ()):
        expression = field.get("from")
        if expression is None:
            continue
        where = f"outputs[{number}].from"
        try:
            compiled = _compile_expression(expression)
        except jmespath.exceptions.JMESPathError as error:
            position = getattr(error, "lex_position", None)
            at = f" at position {position}" if isinstance(position, int) else ""
            reason = getattr(error, "msg", None) or str(error).splitlines()[0]
            problem(where, f"output {field['name']!r}: {expression!r} is not a JMESPath expression{at}: {reason}")
            continue
        first = _leftmost_field(compiled.parsed)
        if first is not None and first not in VIEW_KEYS:
            problem(where, f"output {field['name']!r}: {expression!r} reads {first!r}, but a reply is "
                           f"{{status, headers, body}}: did you mean 'body.{expression}'?")
    body = (service.get("reply") or {}).get("body")
    if body is not None and not found:
        _check_against_reply(service, body, problem)
    return found


def _present(node: dict) -> dict:
    """A normal type with every null and every absence taken away: what the check at registration
    can prove of a reply is its kinds; null and missing values stay the runtime's to find."""
    return {**node, "nullable": False,
            "items": _present(node["items"]) if node.get("items") else node.get("items"),
            "fields": None if node.get("fields") is None else
            [{**field, "required": True, "type": _present(field["type"])} for field in node["fields"]]}


def _check_against_reply(service: Mapping[str, Any], body: Mapping[str, Any],
                         problem: Callable[[str, str], None]) -> None:
    """Type each output's expression over the declared reply, {status: int, headers: object, body},
    and name every output whose kind it proves wrong, or that reads what the reply does not hold."""
    try:
        body_type = types.parse_field({**body, "name": "body"})["type"]
    except types.TypeSpecError:
        return  # refused by the definition's schema already
    view = types.normal_type({"type": "object", "fields": [
        {"name": "status", "type": "int"}, {"name": "headers", "type": "object"}, {"name": "body", "type": "any"}]})
    view["fields"][2] = {**view["fields"][2], "type": body_type}
    for number, field in enumerate(service.get("outputs") or ()):
        given = field.get("from")
        text = given or f"body.{json.dumps(field['name'])}"
        where = f"outputs[{number}].from" if given else f"outputs[{number}]"
        try:
            result, found = expressions.infer_over(expressions.compile_expression(text), view)
        except (expressions.ExpressionError, RecursionError):
            continue  # what does not compile is named above
        for message in found:
            problem(where, f"output {field['name']!r}: {message} (in the service's declared reply)")
        if found:
            continue
        declared = types.parse_field(field)["type"]
        for message in types.incompatibilities(_present(result), declared):
            problem(where, f"output {field['name']!r}: {text} is {types.describe(result)} in the declared "
                           f"reply, but the output is {types.describe(declared)}" +
                           ("" if message.startswith("expected ") else f": {message}"))


def fingerprint(service: Mapping[str, Any]) -> str:
    """A digest of everything a call compiles from: the same definition, the same compiled call."""
    parts = {key: service.get(key) for key in ("address", "request", "success")}
    parts["inputs"] = [[field["name"], kind(field)] for field in service.get("inputs") or ()]
    parts["outputs"] = [[field["name"], field.get("from"), field.get("nullable", False)]
                        for field in service.get("outputs") or ()]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:32]


def checked(service: Mapping[str, Any], secret_known: Callable[[str], bool]) -> dict:
    """A service definition checked for registration, with its fingerprint when it is a version 2 one.
    Raises InvalidData (422) naming every problem."""
    found = problems(service, secret_known)
    if found:
        where, messages = next(iter(found.items()))
        more = sum(len(value) for value in found.values()) - 1
        raise InvalidData(f"service {service.get('name')!r} does not check: {where}: {messages[0]}"
                          + (f" (and {more} more)" if more else ""), errors=found)
    definition = dict(service)
    # Set either way: a replacement is written over the stored definition, so a version 1 one clears it.
    definition["fingerprint"] = fingerprint(definition) if is_v2(definition) else None
    return definition


# -- compiled calls ------------------------------------------------------------------------

class Prepared:
    """One call's request, built: what to send, what to record, and the secret values to mask."""

    __slots__ = ("method", "path", "body", "headers", "record", "secrets")

    def __init__(self, method, path, body, headers, record, secrets):
        self.method, self.path, self.body, self.headers = method, path, body, headers
        self.record, self.secrets = record, secrets


class Call:
    """A service's request and reply, compiled once: templates parsed, expressions compiled."""

    def __init__(self, service: Mapping[str, Any]):
        request = service.get("request") or {}
        self.method = request.get("method", "POST")
        address = service["address"]
        parts = urlsplit(address)
        self.origin = (parts.scheme, parts.hostname if parts.hostname.isascii()
                       else parts.hostname.encode("idna").decode("ascii"),
                       parts.port or (443 if parts.scheme == "https" else 80))
        self.base_path = requote_uri(parts.path).rstrip("/")
        self.base_query = parts.query
        self.base_url = address.split("?", 1)[0].rstrip("/")
        path = request.get("path") or ""
        self.path = parse_template(path, secrets_allowed=False).parts if path else ()
        inputs = [field["name"] for field in service.get("inputs") or ()]
        placed = set()
        for _, name in self.path:
            placed.add(name)
        self.query = [(encode(parameter), name) for parameter, name in (request.get("query") or {}).items()]
        placed.update(name for _, name in self.query)
        self.headers = []
        secret_names: list[str] = []
        for header, text in (request.get("headers") or {}).items():
            template = parse_template(text, secrets_allowed=True)
            placed.update(template.inputs)
            secret_names.extend(template.secrets)
            self.headers.append((header, template.parts, bool(template.secrets)))
        self.secret_names = tuple(dict.fromkeys(secret_names))  # what to mask in a callback's outputs
        overridden = {header.lower() for header, _, _ in self.headers}
        self.defaults = tuple((name, value) for name, value in DEFAULT_HEADERS if name.lower() not in overridden)
        self.overridden = overridden
        self.sends_body = self.method in BODY_METHODS
        self.whole_body = None
        self.body_fields: list[str] | None = None
        if "body" in request:
            body = request["body"]
            if body is None:
                self.sends_body = False
            elif isinstance(body, str):
                self.whole_body = body
            else:
                self.body_fields = list(body)
        elif self.sends_body:
            self.body_fields = [name for name in inputs if name not in placed]
        else:  # GET and DELETE: inputs placed nowhere go in the query string, under their own names
            self.query.extend((encode(name), name) for name in inputs if name not in placed)
        success = service.get("success")
        self.success = frozenset(success) if success else None
        self.outputs = []
        self.wants_headers = False
        for field in service.get("outputs") or ():
            expression = field.get("from")
            compiled = _compile_expression(expression) if expression else None
            if expression and "headers" in expression:
                self.wants_headers = True
            self.outputs.append((field["name"], compiled, _field_path(compiled.parsed) if compiled else None,
                                 bool(field.get("nullable"))))
        self.maps_outputs = any(compiled is not None for _, compiled, _, _ in self.outputs)

    def prepare(self, inputs: Mapping[str, Any], machinery_headers: Mapping[str, str],
                secret: Callable[[str], str]) -> Prepared:
        """Build the request for these inputs. Raises ServiceCallError (kind `request` or `secret`, not
        retried) when an input cannot be placed or a secret cannot be read."""
        path = self.base_path
        for part, value in self.path:
            if part == "text":
                path += value
                continue
            text = scalar_text(inputs.get(value))
            if text is None:
                raise ServiceCallError(f"the path placeholder {{{value}}} has no scalar value "
                                       f"(got {types.json_type(inputs.get(value))})", kind="request", retryable=False)
            path += encode(text)
        query = [self.base_query] if self.base_query else []
        for parameter, name in self.query:
            value = inputs.get(name)
            if value is None:
                continue  # an absent optional input (or a null) sends no parameter
            for item in value if isinstance(value, list) else (value,):
                text = scalar_text(item)
                if text is None:
                    raise ServiceCallError(f"query parameter {parameter!r} from input {name!r} takes scalars, "
                                           f"got {types.json_type(item)}", kind="request", retryable=False)
                query.append(f"{parameter}={encode(text)}")
        if not path:
            path = "/"
        if query:
            path += "?" + "&".join(query)
        body = None
        if self.sends_body:
            if self.whole_body is not None:
                payload = inputs.get(self.whole_body)
            else:
                payload = {name: inputs[name] for name in self.body_fields if name in inputs}
            body = json.dumps(payload, separators=(",", ":")).encode()
        headers = list(self.defaults)
        headers.extend((name, value) for name, value in machinery_headers.items()
                       if name.lower() not in self.overridden and (body is not None or name != "Content-Type"))
        shown: dict[str, str] = {}
        used: list[str] = []
        for header, parts, with_secret in self.headers:
            value = ""
            missing = False
            for part, item in parts:
                if part == "text":
                    value += item
                elif part == "input":
                    given = inputs.get(item)
                    if given is None:
                        missing = True  # an absent optional input: the header is not sent
                        break
                    text = scalar_text(given)
                    if text is None:
                        raise ServiceCallError(f"header {header} from input {item!r} takes a scalar, got "
                                               f"{types.json_type(given)}", kind="request", retryable=False)
                    value += text
                else:
                    text = secret(item)
                    used.append(text)
                    value += text
            if missing:
                continue
            if "\r" in value or "\n" in value or "\x00" in value:
                raise ServiceCallError(f"header {header} would hold a line break or NUL", kind="request",
                                       retryable=False)
            headers.append((header, value))
            shown[header] = MASK if with_secret else value
        record = {"method": self.method, "url": self.base_url + path[len(self.base_path):], "headers": shown}
        return Prepared(self.method, path, body, headers, record, used)

    def view(self, status: int, headers, raw: bytes) -> dict:
        """The reply as its outputs' expressions see it: {status, headers (lower-case names), body
        (JSON, or the text when it is not JSON; null when empty)}."""
        if raw:
            try:
                body = json.loads(raw)
            except (ValueError, RecursionError):
                body = raw.decode("utf-8", "replace")
        else:
            body = None
        view = {"status": status, "body": body}
        if self.wants_headers:
            view["headers"] = {name.lower(): value for name, value in headers.items()}
        return view

    def select(self, view: Mapping[str, Any], problems: dict | None = None) -> dict:
        """Each output from its expression (default: the body's top-level key of its name). A null
        result is a missing output unless the output is nullable. An expression that cannot be
        evaluated on this reply (`length(body.lines)` where `lines` is null) gives no output, and its
        reason goes in `problems`, by output name: a contract failure, not a crash."""
        body = view.get("body")
        outputs = {}
        for name, compiled, path, nullable in self.outputs:
            if compiled is None:
                if isinstance(body, dict) and name in body:
                    outputs[name] = body[name]
                continue
            if path is not None:  # a plain a.b.c: walked directly, as JMESPath would, without its interpreter
                value = view
                for key in path:
                    value = value.get(key) if isinstance(value, dict) else None
            else:
                try:
                    value = compiled.search(view)
                except jmespath.exceptions.JMESPathError as error:
                    if problems is not None:
                        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
                        if len(reason) > 200:
                            reason = reason[:200] + "..."
                        problems[name] = f"`from` cannot be read from this reply: {reason}"
                    continue
            if value is not None or nullable:
                outputs[name] = value
        return outputs


_COMPILED: dict[str, Call] = {}


def compiled_for(service: Mapping[str, Any]) -> Call | None:
    """The compiled call of a plan's version 2 service; None for a version 1 one (POSTed its inputs,
    its outputs read from the reply's top level)."""
    return compiled(service) if "fingerprint" in service or "request" in service else None


def compiled(service: Mapping[str, Any]) -> Call:
    """The compiled call of a plan's service, by its fingerprint (worked out here for a definition
    that was stored without one)."""
    key = service.get("fingerprint") or fingerprint(service)
    call = _COMPILED.get(key)
    if call is None:
        call = Call(service)
        if len(_COMPILED) >= CACHE_SIZE:
            _COMPILED.clear()
        _COMPILED[key] = call
    return call


# -- masking ---------------------------------------------------------------------------------

_NEEDLES: dict[tuple, list[str]] = {}


def mask(value: Any, secrets: Iterable[str]) -> Any:
    """`value` with every occurrence of a secret (and of its JSON-escaped form) replaced by ***."""
    key = tuple(secrets)
    needles = _NEEDLES.get(key)
    if needles is None:
        needles = sorted({form for secret in key if secret for form in (secret, json.dumps(secret)[1:-1])},
                         key=len, reverse=True)
        if len(_NEEDLES) >= CACHE_SIZE:
            _NEEDLES.clear()
        _NEEDLES[key] = needles
    if not needles:
        return value
    return _mask(value, needles)


def _mask(value: Any, needles: list[str]) -> Any:
    if isinstance(value, str):
        for needle in needles:
            if needle in value:
                value = value.replace(needle, MASK)
        return value
    if isinstance(value, dict):
        return {_mask(key, needles): _mask(item, needles) for key, item in value.items()}
    if isinstance(value, list):
        return [_mask(item, needles) for item in value]
    return value

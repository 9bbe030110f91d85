"""Import an OpenAPI 3.0 or 3.1 document: validate it, resolve its references, and turn each operation
into one service definition (no Flask, no pymongo).

What becomes what (the README, "Importing an OpenAPI document", says it to users):

- name: the ``operationId`` made a valid service name (letters, digits, ``_ . -``), after ``prefix``;
  an operation without one is named from its method and path (``get-pets-id``), and the report says so.
- address: ``base_url`` when given, else the operation's, its path's or the document's first server,
  with server variables at their defaults and a relative URL read against the document's URL.
- inputs: the path, query and header parameters (names made placeholder-safe), then the JSON request
  body: an object body with declared properties gives one input per property (the body is those
  inputs, as for a version 1 service); any other JSON body is one input, ``body``, sent whole.
- outputs: from the first 2xx response with a JSON schema: one output per property of an object
  reply, else one output ``body`` holding the whole reply. A 2xx without content is success too.
- success: the declared 2xx statuses, and any other response marked ``x-machinery-success: true``
  (then every output is optional and an output ``status`` tells which answer came).
- security: an apiKey (header or cookie), http bearer or basic, oauth2 or openIdConnect scheme becomes a
  header holding ``{secret.<name>}``; the report lists the secrets to register.
- POST and PATCH operations are not retried (an API that is not ours may not deduplicate).

Skipped, with the reason: an operation whose required body is not JSON (multipart, a form), one
with a required cookie parameter, a path or header parameter that is not a scalar, or no JSON and
no empty 2xx response.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Iterable, Mapping
from urllib.parse import urljoin, urlsplit

from machinery.exceptions import InvalidData
from machinery.language import types

METHODS = ("get", "put", "post", "delete", "patch")  # what a service's request may use
OTHER_METHODS = ("head", "options", "trace")
NAME_RULE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$")
MAX_NAME = 100
MAX_DESCRIPTION = 2000
MAX_REF_HOPS = 32  # a $ref to a $ref to ...: past this it is a cycle or a trap
MAX_WALK = 200_000  # values looked at when scanning the document for references
MAX_PROBLEMS = 5
JSON_MEDIA = re.compile(r"^application/(?:[\w.\-]+\+)?json$|^application/json;", re.IGNORECASE)
SUCCESS_EXTENSION = "x-machinery-success"
# Header parameters Machinery sets itself (or the security scheme does): never taken from inputs.
MACHINERY_HEADERS = frozenset({"content-type", "authorization", "host", "content-length", "transfer-encoding",
                               "connection", "accept-encoding", "idempotency-key"})


class OpenAPIError(InvalidData):
    """The document is not one that can be imported; `errors` names where ({"where", "problem"})."""


@dataclass
class Operation:
    """What one operation of the document becomes."""

    method: str
    path: str
    operation_id: str | None
    name: str | None = None
    service: dict | None = None
    skipped: str | None = None
    warnings: list[str] = field(default_factory=list)
    secrets: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.method.upper()} {self.path}"

    def report(self) -> dict:
        item = {"operation": self.label, "operation_id": self.operation_id, "name": self.name}
        if self.skipped:
            item["reason"] = self.skipped
        if self.secrets:
            item["secrets"] = self.secrets
        item["warnings"] = self.warnings
        return item


@dataclass
class Conversion:
    """The services an OpenAPI document gives, and what it could not give."""

    title: str
    version: str
    openapi: str
    operations: list[Operation]
    secrets: dict[str, str]  # secret name -> what it holds, for the user to register

    def ready(self) -> list[Operation]:
        return [operation for operation in self.operations if operation.service is not None]


# -- validation ------------------------------------------------------------------------------


def _pointer(parts: Iterable[Any]) -> str:
    """A JSON pointer-like path for messages: paths./pets/{id}.get.responses."""
    return ".".join(str(part) for part in parts) or "(top)"


def _first_line(text: str, limit: int = 300) -> str:
    line = str(text).strip().splitlines()[0] if str(text).strip() else ""
    return line if len(line) <= limit else line[: limit - 3] + "..."


def _refuse(where: str, problem: str) -> OpenAPIError:
    return OpenAPIError(f"the OpenAPI document does not validate at {where}: {problem}",
                        errors={"where": where, "problem": problem})


def _external_refs(document: Any) -> None:
    """Refuse a `$ref` leaving the document: the validator would read it from a file or a URL."""
    stack: list[tuple[Any, tuple]] = [(document, ())]
    looked = 0
    while stack:
        value, where = stack.pop()
        looked += 1
        if looked > MAX_WALK:
            raise OpenAPIError(f"the OpenAPI document holds more than {MAX_WALK} values; it is too large to import")
        if isinstance(value, dict):
            ref = value.get("$ref")
            if "$ref" in value and (not isinstance(ref, str) or not ref.startswith("#")):
                spot = _pointer((*where, "$ref"))
                raise OpenAPIError(
                    f"the OpenAPI document refers outside itself at {spot} ({str(ref)[:200]!r}): only "
                    "references inside the document (#/...) are followed; bundle the document first",
                    errors={"where": spot, "problem": "a reference outside the document"})
            stack.extend((child, (*where, key)) for key, child in value.items())
        elif isinstance(value, list):
            stack.extend((child, (*where, index)) for index, child in enumerate(value))


def validate(document: Any) -> str:
    """Check that `document` is a valid OpenAPI 3.0 or 3.1 document; return its version.

    Raises OpenAPIError naming where the first problem is (the validator's path).
    """
    from openapi_spec_validator import OpenAPIV30SpecValidator, OpenAPIV31SpecValidator
    from openapi_spec_validator.validation.exceptions import OpenAPIValidationError
    from referencing.exceptions import Unresolvable

    if not isinstance(document, dict):
        raise _refuse("(top)", f"an OpenAPI document is an object, not {types.json_type(document)}")
    version = document.get("openapi")
    if "swagger" in document and version is None:
        raise _refuse("swagger", "this is a Swagger 2.0 document; convert it to OpenAPI 3 first")
    if not isinstance(version, str) or not re.match(r"^3\.[01]\.\d+", version):
        raise _refuse("openapi", f"must name version 3.0.x or 3.1.x, not {str(version)[:40]!r}")
    _external_refs(document)
    validator = (OpenAPIV31SpecValidator if version.startswith("3.1") else OpenAPIV30SpecValidator)(document)
    try:
        error = next(iter(validator.iter_errors()), None)
    except Unresolvable as unresolvable:
        ref = getattr(unresolvable, "ref", None) or str(unresolvable)
        raise _refuse("$ref", f"the reference {_first_line(ref, 200)!r} points at nothing in the document") from None
    except (KeyError, TypeError, ValueError, AttributeError, RecursionError) as crash:
        # The validator goes on into checks that assume the structure it just found wrong.
        raise _refuse("(top)", f"the document's structure cannot be read ({type(crash).__name__}: "
                               f"{_first_line(crash, 200)})") from None
    if error is None:
        return version
    if not isinstance(error, OpenAPIValidationError):  # pragma: no cover - the validator yields only these
        raise _refuse("(top)", _first_line(error))
    where = _pointer(error.absolute_path) if error.absolute_path else _where_from(error.message)
    raise _refuse(where, _first_line(error.message))


def _where_from(message: str) -> str:
    """The validator's own checks (unique operationIds, path parameters) name the place in the message."""
    match = re.search(r"for '(\w+)' (?:operation )?in '([^']+)'", message)
    return f"paths.{match.group(2)}.{match.group(1)}" if match else "paths"


# -- references ------------------------------------------------------------------------------


class Resolver:
    """Follows `$ref`s inside one document with `referencing`, refusing cycles and long chains."""

    def __init__(self, document: dict, version: str):
        from referencing import Registry, Resource
        from referencing.jsonschema import DRAFT4, DRAFT202012

        specification = DRAFT202012 if version.startswith("3.1") else DRAFT4
        self.uri = "urn:machinery:openapi-document"
        resource = Resource(contents=document, specification=specification)
        self.resolver = Registry().with_resource(self.uri, resource).resolver(base_uri=self.uri)

    def lookup(self, ref: str) -> Any:
        from referencing.exceptions import Unresolvable

        try:
            return self.resolver.lookup(ref).contents
        except Unresolvable:
            raise _refuse("$ref", f"the reference {ref[:200]!r} points at nothing in the document") from None

    def deref(self, value: Any, where: str) -> Any:
        """`value` with `$ref`s at its top followed (3.1 sibling keys kept over the target's)."""
        seen: list[str] = []
        while isinstance(value, dict) and isinstance(value.get("$ref"), str):
            ref = value["$ref"]
            if ref in seen or len(seen) >= MAX_REF_HOPS:
                raise _refuse(where, f"the reference {ref!r} leads back to itself ({' -> '.join(seen)})")
            seen.append(ref)
            target = self.lookup(ref)
            siblings = {key: item for key, item in value.items() if key != "$ref"}
            value = {**target, **siblings} if siblings and isinstance(target, dict) else target
        return value


# -- names -----------------------------------------------------------------------------------


def service_name(text: str) -> str:
    """`text` made a valid service name: other characters become '-', at most MAX_NAME long."""
    name = re.sub(r"[^A-Za-z0-9_.\-]+", "-", text).strip("-._")
    return name[:MAX_NAME].rstrip("-._")


def derived_name(method: str, path: str) -> str:
    """A name for an operation without an operationId: get /pets/{id} -> get-pets-id."""
    words = [method, *re.findall(r"[A-Za-z0-9_]+", path)]
    return service_name("-".join(words)) or method


def input_name(text: str) -> str:
    """A parameter's name made an input name a template can hold: letters, digits and '_'."""
    name = re.sub(r"[^A-Za-z0-9_]", "_", text)
    if not name or name[0].isdigit():
        name = f"p_{name}"
    return name[:MAX_NAME]


def secret_name(prefix: str, scheme: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", f"{prefix}{scheme}".lower()).strip("_")[:MAX_NAME] or "api_key"


def _jmespath_key(name: str) -> str:
    return name if re.match(r"^[A-Za-z_][A-Za-z0-9_]*$", name) else '"' + name.replace("\\", "\\\\").replace(
        '"', '\\"') + '"'


def _field_name_ok(name: Any) -> bool:
    return (isinstance(name, str) and 0 < len(name) <= MAX_NAME and not name.startswith("$")
            and "." not in name and not re.search(r"[\x00-\x1f\x7f]", name))


# -- conversion ------------------------------------------------------------------------------


class _Converter:
    def __init__(self, document: dict, version: str, prefix: str, base_url: str | None,
                 document_url: str | None):
        self.document, self.version = document, version
        self.refs = Resolver(document, version)
        self.prefix, self.base_url, self.document_url = prefix, base_url, document_url
        self.secrets: dict[str, str] = {}

    # types

    def type_of(self, schema: Any, where: str, operation: Operation) -> Any:
        """The model's type for a schema of the document; what it cannot say becomes any, with a warning."""
        if schema is None:
            return "any"
        spec, warnings = types.from_json_schema(schema, self.document, where)
        operation.warnings.extend(warnings)
        return spec

    def object_properties(self, schema: Any, where: str) -> tuple[dict, set] | None:
        """(properties, required) of an object schema with declared properties (allOf merged), or None."""
        schema = self.refs.deref(schema, where)
        if not isinstance(schema, dict):
            return None
        properties: dict[str, Any] = {}
        required: set[str] = set()
        parts = [schema]
        if isinstance(schema.get("allOf"), list):
            parts = [self.refs.deref(part, where) for part in schema["allOf"]] + [schema]
        for part in parts:
            if not isinstance(part, dict):
                return None
            if any(key in part for key in ("anyOf", "oneOf")) or part.get("type") not in (None, "object"):
                return None
            if isinstance(part.get("allOf"), list) and part is not schema:
                nested = self.object_properties(part, where)
                if nested is None:
                    return None
                properties.update(nested[0])
                required |= nested[1]
            properties.update(part.get("properties") or {})
            required |= set(part.get("required") or [])
        return (properties, required) if properties else None

    # the parts of an operation

    def address(self, path_item: dict, operation: dict) -> tuple[str | None, str | None]:
        """(address, None) or (None, why there is none)."""
        if self.base_url:
            return self.base_url, None
        servers = operation.get("servers") or path_item.get("servers") or self.document.get("servers") \
            or [{"url": "/"}]
        server = servers[0]
        url = server.get("url", "/")
        for variable, spec in (server.get("variables") or {}).items():
            url = url.replace("{" + variable + "}", str(spec.get("default", "")))
        if "{" in url:
            return None, f"the server URL {url!r} has a variable with no default"
        if not urlsplit(url).scheme:
            if not self.document_url:
                return None, (f"the server URL {url!r} is relative and the document was not fetched from a URL: "
                              "give base_url")
            url = urljoin(self.document_url, url)
        if urlsplit(url).scheme not in ("http", "https"):
            return None, f"the server URL {url!r} is not http or https"
        return url, None

    def parameters(self, path_item: dict, operation: dict, where: str) -> list[dict]:
        merged: dict[tuple, dict] = {}
        for source, label in ((path_item, "parameters"), (operation, "parameters")):
            for index, parameter in enumerate(source.get("parameters") or []):
                parameter = self.refs.deref(parameter, f"{where}.{label}[{index}]")
                merged[(parameter.get("name"), parameter.get("in"))] = parameter
        return list(merged.values())

    def parameter_schema(self, parameter: dict, where: str) -> Any:
        if "schema" in parameter:
            return parameter["schema"]
        for media, content in (parameter.get("content") or {}).items():
            if JSON_MEDIA.match(media):
                return (content or {}).get("schema")
        return None

    def kind(self, schema: Any, where: str) -> str | None:
        schema = self.refs.deref(schema, where)
        if not isinstance(schema, dict):
            return None
        kind = schema.get("type")
        if isinstance(kind, list):
            rest = [item for item in kind if item != "null"]
            kind = rest[0] if len(rest) == 1 else None
        if kind is None and ("properties" in schema or "allOf" in schema):
            kind = "object"
        return kind

    def security(self, operation: dict, result: Operation) -> dict[str, str] | None:
        """Headers carrying the operation's credentials, or None when no requirement can be met."""
        requirements = operation.get("security", self.document.get("security")) or []
        if not requirements:
            return {}
        schemes = ((self.document.get("components") or {}).get("securitySchemes") or {})
        reasons = []
        for requirement in requirements:
            headers: dict[str, str] = {}
            secrets: dict[str, str] = {}
            usable = True
            for scheme_name in requirement:
                scheme = self.refs.deref(schemes.get(scheme_name) or {}, f"securitySchemes.{scheme_name}")
                secret = secret_name(self.prefix, scheme_name)
                kind = scheme.get("type")
                if kind == "apiKey" and scheme.get("in") == "header":
                    headers[scheme.get("name", "X-API-Key")] = f"{{secret.{secret}}}"
                    secrets[secret] = f"the API key sent as the {scheme.get('name')} header ({scheme_name})"
                elif kind == "apiKey" and scheme.get("in") == "cookie":
                    headers["Cookie"] = f"{scheme.get('name')}={{secret.{secret}}}"
                    secrets[secret] = f"the API key sent as the {scheme.get('name')} cookie ({scheme_name})"
                elif kind == "http" and str(scheme.get("scheme", "")).lower() == "bearer":
                    headers["Authorization"] = f"Bearer {{secret.{secret}}}"
                    secrets[secret] = f"the bearer token ({scheme_name})"
                elif kind == "http" and str(scheme.get("scheme", "")).lower() == "basic":
                    headers["Authorization"] = f"Basic {{secret.{secret}}}"
                    secrets[secret] = f"base64 of user:password for HTTP basic authentication ({scheme_name})"
                elif kind in ("oauth2", "openIdConnect"):
                    headers["Authorization"] = f"Bearer {{secret.{secret}}}"
                    secrets[secret] = f"an access token obtained beforehand ({kind} {scheme_name}); " \
                                      "Machinery does not run the OAuth flow"
                else:
                    usable = False
                    reasons.append(f"{scheme_name} ({kind} in {scheme.get('in', scheme.get('scheme'))})")
            if usable:
                self.secrets.update(secrets)
                result.secrets = sorted(secrets)
                if any(schemes.get(name, {}).get("type") in ("oauth2", "openIdConnect") for name in requirement):
                    result.warnings.append("OAuth: the access token is a secret to register and renew by hand")
                return headers
        result.skipped = "its security cannot be expressed as headers: " + ", ".join(dict.fromkeys(reasons))
        return None

    def responses(self, operation: dict, where: str, result: Operation) -> tuple[Any, list[int], bool] | None:
        """(JSON schema of the success reply or None, success statuses, whether some success has no body)."""
        responses = operation.get("responses") or {}
        statuses: list[int] = []
        schema, chosen, empty = None, None, False
        non_json = []
        declared = {}
        for code, response in responses.items():
            code = str(code)
            response = self.refs.deref(response, f"{where}.responses.{code}")
            declared[code] = response
        two_xx = sorted(code for code in declared if re.match(r"^2(\d\d|XX)$", code, re.IGNORECASE))
        candidates = two_xx or (["default"] if "default" in declared else [])
        if not two_xx and candidates:
            result.warnings.append("no 2xx response is declared: the 'default' response is taken as the success")
        for code in candidates:
            statuses.extend(range(200, 300) if not code[1:].isdigit() else [int(code)])
            content = declared[code].get("content") or {}
            json_media = [media for media in content if JSON_MEDIA.match(media)]
            if json_media:
                found = content[json_media[0]].get("schema")
                if schema is None and chosen is None:
                    schema, chosen = found if found is not None else {}, code
                elif found != schema:
                    result.warnings.append(f"response {code} has another schema than {chosen}; "
                                           f"the outputs follow {chosen}")
            elif content:
                non_json.append(f"{code} ({', '.join(content)})")
            else:
                empty = True
        if chosen is None and non_json:
            result.skipped = f"no JSON response: {'; '.join(non_json)}"
            return None
        if chosen is None and not empty:
            result.skipped = "no success response is declared"
            return None
        others = []
        for code, response in declared.items():
            if response.get(SUCCESS_EXTENSION) is True and code not in candidates and code[1:].isdigit():
                others.append(int(code))
        if not two_xx:
            statuses = []  # the default: every 2xx
        return schema, sorted(set(statuses) | set(others)), empty or bool(others)

    def body(self, operation: dict, where: str, result: Operation, taken: set[str]) -> tuple[list, Any] | None:
        """(inputs, request body: list of input names, one input's name, or None), or None when skipped."""
        request_body = self.refs.deref(operation.get("requestBody"), f"{where}.requestBody")
        if not request_body:
            return [], None
        content = request_body.get("content") or {}
        json_media = [media for media in content if JSON_MEDIA.match(media)]
        required = request_body.get("required") is True
        if not json_media:
            kinds = ", ".join(content) or "no media type"
            if required:
                result.skipped = f"its request body is not JSON ({kinds}); Machinery sends JSON bodies only"
                return None
            result.warnings.append(f"the optional request body ({kinds}) is not JSON and is never sent")
            return [], None
        schema = content[json_media[0]].get("schema") or {}
        shape = self.object_properties(schema, f"{where}.requestBody")
        if shape is not None:
            properties, needed = shape
            names = list(properties)
            if all(_field_name_ok(name) and name not in taken for name in names):
                inputs = []
                for name in names:
                    spec = self.type_of(properties[name], f"requestBody.{name}", result)
                    inputs.append(_field(name, spec, required and name in needed,
                                         _description(self.refs.deref(properties[name], where))))
                taken.update(names)
                return inputs, names
            result.warnings.append("the body's property names clash with the parameters or cannot be input names: "
                                   "the body is one input, 'body'")
        kind = self.kind(schema, f"{where}.requestBody")
        if kind not in (None, "object"):
            if required:
                result.skipped = f"its JSON body is {'an' if kind[0] in 'aeiou' else 'a'} {kind}; a service's " \
                                 "body is a JSON object"
                return None
            result.warnings.append(f"the optional JSON body is {'an' if kind[0] in 'aeiou' else 'a'} {kind} and is "
                                   "never sent")
            return [], None
        name = _unique("body", taken)
        spec = self.type_of(schema, "requestBody", result)
        return [_field(name, spec, required, request_body.get("description"))], name

    def operation(self, method: str, path: str, path_item: dict, operation: dict) -> Operation:
        where = f"paths.{path}.{method}"
        operation_id = operation.get("operationId")
        result = Operation(method, path, operation_id if isinstance(operation_id, str) else None)
        base = service_name(operation_id) if isinstance(operation_id, str) else ""
        if not base:
            base = derived_name(method, path)
            result.warnings.append(f"no operationId: named {self.prefix + base!r} from its method and path")
        elif base != operation_id:
            result.warnings.append(f"operationId {operation_id!r} is not a valid service name: named "
                                   f"{self.prefix + base!r}")
        result.name = (self.prefix + base)[:MAX_NAME]

        address, why = self.address(path_item, operation)
        if address is None:
            result.skipped = why
            return result

        inputs: list[dict] = []
        taken: set[str] = set()
        placeholders: dict[str, str] = {}
        query: dict[str, str] = {}
        headers: dict[str, str] = {}
        for parameter in self.parameters(path_item, operation, where):
            name, location = parameter.get("name"), parameter.get("in")
            spot = f"{where}.parameters[{name}]"
            required = parameter.get("required") is True or location == "path"
            schema = self.parameter_schema(parameter, spot)
            kind = self.kind(schema, spot)
            if location == "cookie":
                if required:
                    result.skipped = f"it needs the cookie parameter {name!r}; Machinery sends no cookies from inputs"
                    return result
                result.warnings.append(f"the optional cookie parameter {name!r} is never sent")
                continue
            if location in ("path", "header") and kind in ("array", "object"):
                if required:
                    result.skipped = f"the {location} parameter {name!r} is an {kind}; a {location} template " \
                                     "holds only a scalar input"
                    return result
                result.warnings.append(f"the optional {location} parameter {name!r} is an {kind} and is never sent")
                continue
            if location == "query" and kind == "object":
                if required:
                    result.skipped = f"the query parameter {name!r} is an object (style " \
                                     f"{parameter.get('style', 'form')}), which Machinery cannot send"
                    return result
                result.warnings.append(f"the optional query parameter {name!r} is an object and is never sent")
                continue
            if location == "header" and (str(name).lower() in MACHINERY_HEADERS
                                         or str(name).lower().startswith("x-machinery-")):
                result.warnings.append(f"the header parameter {name!r} is set by Machinery or the security scheme; "
                                       "it is not an input")
                continue
            if location == "query" and kind == "array" and parameter.get("explode") is False:
                result.warnings.append(f"the query parameter {name!r} asks for comma-separated values "
                                       "(explode: false); it is sent repeated")
            key = input_name(str(name))
            if key in taken:
                key = _unique(f"{key}_{location}", taken)
            taken.add(key)
            spec = self.type_of(schema, f"parameters.{name}", result)
            inputs.append(_field(key, spec, required, parameter.get("description")))
            if location == "path":
                placeholders[str(name)] = key
            elif location == "query":
                query[str(name)] = key
            else:
                headers[str(name)] = "{" + key + "}"

        body = self.body(operation, where, result, taken)
        if body is None:
            return result
        body_inputs, body_spec = body
        inputs.extend(body_inputs)

        replies = self.responses(operation, where, result)
        if replies is None:
            return result
        reply_schema, success, optional = replies

        secured = self.security(operation, result)
        if secured is None:
            return result
        headers.update(secured)

        request: dict[str, Any] = {
            "method": method.upper(),
            "path": re.sub(r"\{([^{}]+)\}", lambda match: "{" + placeholders.get(match.group(1), match.group(1))
                           + "}", path),
        }
        if query:
            request["query"] = query
        if headers:
            request["headers"] = headers
        if method in ("post", "put", "patch") or body_spec is not None:
            request["body"] = body_spec
        service: dict[str, Any] = {
            "name": result.name,
            "address": address,
            "description": _description(operation) or f"{method.upper()} {path}",
            "request": request,
            "inputs": inputs,
            "outputs": self.outputs(reply_schema, optional, success, result),
        }
        if reply_schema is not None:
            # The whole reply's type, so that an output edited later is checked against it; its warnings
            # are the outputs' own, already listed.
            service["reply"] = {"body": {"type": types.from_json_schema(reply_schema, self.document, "response")[0]}}
        if success:
            service["success"] = success
        if method in ("post", "patch"):
            service["retry"] = {"max_attempts": 1, "backoff_s": 0.5}
        result.service = service
        return result

    def outputs(self, schema: Any, optional: bool, success: list[int], result: Operation) -> list[dict]:
        if schema is None:
            outputs = []
        else:
            shape = self.object_properties(schema, "response")
            if shape is not None and all(_field_name_ok(name) for name in shape[0]):
                properties, needed = shape
                outputs = []
                for name, property_schema in properties.items():
                    spec = self.type_of(property_schema, f"response.{name}", result)
                    output = _field(name, spec, name in needed and not optional,
                                    _description(self.refs.deref(property_schema, "response")))
                    outputs.append(output)
            else:
                outputs = [{**_field("body", self.type_of(schema, "response", result), not optional,
                                     "the whole reply"), "from": "body"}]
        if any(status >= 300 for status in success):
            name = _unique("status", {output["name"] for output in outputs})
            outputs.append({**_field(name, "int", True, "the reply's HTTP status"), "from": "status"})
        return outputs

    def convert(self, only: set[str] | None) -> list[Operation]:
        operations: list[Operation] = []
        for path, path_item in (self.document.get("paths") or {}).items():
            path_item = self.refs.deref(path_item, f"paths.{path}")
            for method in (*METHODS, *OTHER_METHODS):
                operation = path_item.get(method)
                if not isinstance(operation, dict):
                    continue
                operation_id = operation.get("operationId")
                if only is not None and operation_id not in only:
                    continue
                if method in OTHER_METHODS:
                    result = Operation(method, path, operation_id, name=None)
                    result.skipped = f"{method.upper()} is not a method a service calls"
                    operations.append(result)
                    continue
                operations.append(self.operation(method, path, path_item, operation))
        names: set[str] = set()
        for result in operations:
            if result.name and result.name in names:
                renamed = _unique(result.name[: MAX_NAME - 4], names, sep="-")
                result.warnings.append(f"the name {result.name!r} is taken by another operation: named {renamed!r}")
                result.name = renamed
                if result.service is not None:
                    result.service["name"] = renamed
            elif result.name:
                names.add(result.name)
        return operations


def _field(name: str, spec: Any, required: bool, description: Any = None) -> dict:
    item: dict[str, Any] = {"name": name, "type": spec}
    if not required:
        item["required"] = False
    if isinstance(description, str) and description.strip():
        item["description"] = description.strip()[:MAX_DESCRIPTION]
    return item


def _description(node: Any) -> str | None:
    if not isinstance(node, dict):
        return None
    text = node.get("summary") or node.get("description")
    return text.strip()[:MAX_DESCRIPTION] if isinstance(text, str) and text.strip() else None


def _unique(name: str, taken: set[str], sep: str = "_") -> str:
    """`name`, or `name_2`, `name_3` ... if taken; the one returned is added to `taken`."""
    candidate, number = name, 2
    while candidate in taken:
        candidate, number = f"{name}{sep}{number}", number + 1
    taken.add(candidate)
    return candidate


def convert(document: Mapping[str, Any], *, prefix: str = "", base_url: str | None = None,
            only: Iterable[str] | None = None, document_url: str | None = None) -> Conversion:
    """Validate an OpenAPI document and turn each of its operations into a service definition.

    `prefix` goes before every name; `base_url` replaces the document's servers; `only` keeps the
    operations with these operationIds; `document_url` is where the document came from, against which
    relative server URLs are read. Raises OpenAPIError for a document that cannot be imported.
    """
    if prefix and not NAME_RULE.match(prefix):
        raise OpenAPIError("prefix must start with a letter or digit and hold only letters, digits, '_', '.' and '-'",
                           errors={"prefix": ["not a name prefix"]})
    if base_url is not None and urlsplit(base_url).scheme not in ("http", "https"):
        raise OpenAPIError("base_url must be an http:// or https:// URL", errors={"base_url": ["not an http(s) URL"]})
    document = dict(document)
    version = validate(document)
    wanted = set(only) if only is not None else None
    converter = _Converter(document, version, prefix, base_url, document_url)
    operations = converter.convert(wanted)
    if wanted:
        known = {operation.operation_id for operation in operations}
        unknown = sorted(wanted - known)
        if unknown:
            raise OpenAPIError(f"only names operations the document does not have: {', '.join(unknown)}",
                               errors={"only": [f"no operationId {name!r}" for name in unknown]})
    info = document.get("info") or {}
    return Conversion(title=str(info.get("title", "")), version=str(info.get("version", "")), openapi=version,
                      operations=operations, secrets=converter.secrets)


# -- fetching a document ---------------------------------------------------------------------


def fetch(url: str, allowed: Any, max_bytes: int, timeout_s: float = 10.0) -> tuple[bytes, str]:
    """GET an OpenAPI document: (body, content type). Only hosts in MACHINERY_ALLOWED_HOSTS; no
    redirect is followed; at most `max_bytes`; the whole read within about `timeout_s`.

    Raises ForbiddenHost or OpenAPIError (both 422) naming what went wrong.
    """
    import time

    import requests

    from machinery import guard

    if not isinstance(url, str) or urlsplit(url).scheme not in ("http", "https"):
        raise OpenAPIError("url must be an http:// or https:// URL", errors={"url": ["not an http(s) URL"]})
    guard.check_url(url, allowed, "url")
    deadline = time.monotonic() + timeout_s

    def fail(problem: str) -> OpenAPIError:
        return OpenAPIError(f"the document at {url[:200]} cannot be read: {problem}", errors={"url": [problem]})

    try:
        with requests.get(url, timeout=(min(5.0, timeout_s), timeout_s), allow_redirects=False, stream=True,
                          headers={"Accept": "application/json, application/yaml;q=0.9, */*;q=0.5"}) as response:
            if 300 <= response.status_code < 400:
                target = response.headers.get("Location", "")
                raise fail(f"it answered a redirect ({response.status_code}) to {target[:200]!r}, which is not "
                           "followed; give that URL")
            if response.status_code != 200:
                raise fail(f"it answered HTTP {response.status_code}")
            declared = response.headers.get("Content-Length", "")
            if declared.isdigit() and int(declared) > max_bytes:
                raise fail(f"it is {declared} bytes; at most {max_bytes} are read (MACHINERY_MAX_BODY_BYTES)")
            chunks, size = [], 0
            for chunk in response.iter_content(65536):
                size += len(chunk)
                if size > max_bytes:
                    raise fail(f"it is larger than the {max_bytes} bytes read (MACHINERY_MAX_BODY_BYTES)")
                if time.monotonic() > deadline:
                    raise fail(f"it took more than {timeout_s:g} s to arrive")
                chunks.append(chunk)
            return b"".join(chunks), response.headers.get("Content-Type", "")
    except requests.Timeout:
        raise fail(f"no answer within {timeout_s:g} s") from None
    except requests.RequestException as error:
        raise fail(f"the connection failed ({type(error).__name__})") from None

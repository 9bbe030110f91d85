"""The served OpenAPI description made exact: the credentials asked for, and the errors each operation can answer."""

from __future__ import annotations

from http import HTTPStatus

from machinery.api import auth as api_auth
from machinery.api.body import MAX_DEPTH

# Why each error status is answered, as the spec's shared responses say it.
REASONS = {
    400: "The body is not readable JSON: malformed, empty, duplicate keys, NaN or Infinity, an integer beyond "
         f"64 bits, a lone surrogate, or nested more than {MAX_DEPTH} levels",
    401: "No API key, or one that is not valid (WWW-Authenticate says how to send one)",
    403: "The API key lacks the right this operation needs",
    404: "No resource of that id or name",
    409: "The request conflicts with what is registered or with the event's state",
    410: "The callback was already used, or its deadline passed",
    413: "The body is larger than MACHINERY_MAX_BODY_BYTES",
    415: "The body is not sent as application/json",
    422: "The request does not match its schema, or what it names does not check (each problem named)",
    503: "The store is unreachable; try again after Retry-After seconds",
}

# Errors an operation gives beyond the ones its shape implies: (method, path) -> statuses.
CONFLICTS = {
    ("post", "/services"): (409,), ("post", "/s"): (409,), ("put", "/services/{ref}"): (409,),
    ("delete", "/services/{ref}"): (409,), ("post", "/events/{event_id}/retry"): (409, 422),
    ("post", "/e/{workflow_ref}"): (409, 422), ("post", "/callbacks/{token}"): (410, 422),
    ("post", "/workflows"): (409, 422), ("post", "/w"): (409, 422), ("delete", "/workflows/{ref}"): (409,),
    ("post", "/schedules"): (409,), ("patch", "/schedules/{name}"): (409,),
    ("post", "/schedules/{name}/resume"): (409, 422),
}
METHODS = ("get", "put", "post", "delete", "patch")


JSON_VALUE = "#/components/schemas/JsonValue"
INT64 = 2 ** 63


def document(api, keyed: bool) -> None:
    """Describe credentials (see api.auth) and every operation's error replies in the served spec."""
    api_auth.document(api, keyed)
    spec = api.spec
    _json_values(spec)
    for code, reason in REASONS.items():
        name = HTTPStatus(code).name
        if name not in spec.components.responses:
            spec.components.response(name, {"description": reason, "content": {
                "application/json": {"schema": {"$ref": "#/components/schemas/Error"}}}})
    _empty_operations(spec)
    _free_json_in_requests(spec)
    top_security = spec.options.get("security") or []
    for path, item in spec.to_dict()["paths"].items():
        path_parameters = [p for p in item.get("parameters", []) if p.get("in") == "path"]
        if path.startswith("/services/{ref}"):
            for parameter in path_parameters:  # the URL converter (api.services.ServiceRef) says it
                parameter["schema"] = {"type": "string", "pattern": r"^(?!import$)[^/]+$"}
        for method in METHODS:
            operation = item.get(method)
            if operation is None:
                continue
            codes = {503, *CONFLICTS.get((method, path), ())}
            if path_parameters:
                codes.add(404)
            if "requestBody" in operation or (method, path) in (("post", "/events/{event_id}/retry"),):
                codes.update((400, 413, 415))
            security = operation.get("security", top_security)
            if any(requirement for requirement in security):
                codes.update((401, 403))
            responses = operation.setdefault("responses", {})
            for code in sorted(codes):
                responses.setdefault(str(code), {"$ref": f"#/components/responses/{HTTPStatus(code).name}"})


def _empty_operations(spec) -> None:
    """A workflow's `operations` may also be `{}` (what the first prototype's clients send): say so."""
    schema = spec.components.schemas.get("Workflow")
    if schema is None or "operations" not in schema.get("properties", {}):
        return
    listed = schema["properties"]["operations"]
    schema["properties"]["operations"] = {"anyOf": [listed, {
        "type": "object", "maxProperties": 0, "description": "taken as no operations"}]}


def _json_values(spec) -> None:
    """Free-form JSON (event data, replay values, callback outputs) as the body reader admits it.

    Whole numbers must fit in 64 bits (MongoDB keeps no larger); a number is bounded alike, since JSON
    Schema cannot tell 1e19 from 10000000000000000000. Depth is bounded by the reader (32), unsaid here.
    """
    spec.components.schema("JsonValue", {
        "description": "any JSON value; whole numbers within 64 bits",
        "nullable": True,
        "anyOf": [{"type": "string"}, {"type": "boolean"},
                  {"type": "number", "minimum": -INT64, "maximum": INT64 - 1},
                  {"type": "array", "items": {"$ref": JSON_VALUE}},
                  {"type": "object", "additionalProperties": {"$ref": JSON_VALUE}}]})
    values = {"type": "object", "additionalProperties": {"$ref": JSON_VALUE}}
    schemas = spec.components.schemas
    if "EventBody" in schemas:
        schemas["EventBody"]["additionalProperties"] = {"$ref": JSON_VALUE}
        schemas["EventBody"]["properties"]["data"].update(values)
    if "Replay" in schemas:
        schemas["Replay"]["properties"]["context"].update(values)
    callback = spec.to_dict()["paths"].get("/callbacks/{token}", {}).get("post", {})
    body = callback.get("requestBody", {}).get("content", {}).get("application/json", {}).get("schema")
    if body is not None:
        body.update(values)


def _request_schemas(spec) -> tuple[list[dict], set[str]]:
    """The inline schemas of request bodies, and the names of every component they reach."""
    paths = spec.to_dict()["paths"]
    inline = [media["schema"] for item in paths.values() for method in METHODS if method in item
              for media in item[method].get("requestBody", {}).get("content", {}).values() if "schema" in media]
    names: set[str] = set()
    stack: list = list(inline)
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if isinstance(ref, str) and ref.startswith("#/components/schemas/"):
                name = ref.rsplit("/", 1)[1]
                if name not in names and name in spec.components.schemas:
                    names.add(name)
                    stack.append(spec.components.schemas[name])
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
    names.discard("JsonValue")
    return inline, names


_FREE_KEYS = {"description", "nullable", "default", "title", "example"}


def _bound(node: dict) -> None:
    """Free JSON in a request as the body reader admits it (JsonValue); lengths of objects as property counts."""
    if node.get("type") == "object":
        # apispec writes Length on a Dict as minLength/maxLength, which JSON Schema applies to strings only.
        for length, count in (("minLength", "minProperties"), ("maxLength", "maxProperties")):
            if length in node:
                node[count] = node.pop(length)
        extra = node.get("additionalProperties")
        if extra is True or extra == {} or (extra is None and "properties" not in node):
            node["additionalProperties"] = {"$ref": JSON_VALUE}
    elif not set(node) - _FREE_KEYS:
        node["allOf"] = [{"$ref": JSON_VALUE}]
    if node.get("items") == {}:
        node["items"] = {"$ref": JSON_VALUE}
    children = list((node.get("properties") or {}).values())
    for key in ("items", "additionalProperties"):
        if isinstance(node.get(key), dict):
            children.append(node[key])
    for key in ("anyOf", "allOf", "oneOf"):
        children.extend(part for part in node.get(key) or [] if isinstance(part, dict))
    for child in children:
        if "$ref" not in child:
            _bound(child)


def _free_json_in_requests(spec) -> None:
    inline, names = _request_schemas(spec)
    for schema in [*inline, *(spec.components.schemas[name] for name in sorted(names))]:
        if "$ref" not in schema:
            _bound(schema)

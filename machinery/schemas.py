"""Marshmallow schemas for services, workflows, events and the error body, as instances to share."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from bson.dbref import DBRef
from marshmallow import (
    EXCLUDE,
    INCLUDE,
    Schema,
    ValidationError,
    fields,
    post_dump,
    post_load,
    pre_dump,
    validate,
    validates,
    validates_schema,
)

from machinery import auth
from machinery.language import expressions, types

# Patterns mean the same to Python and to ECMA regexes (what OpenAPI's `pattern` is): `$(?!\n)`
# because Python's `$` also matches before a final newline, and a name must not end with one.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$(?!\n)"
NAME_RULE = [
    validate.Length(min=1, max=100),
    validate.Regexp(NAME_PATTERN, error="must start with a letter or digit and hold only letters, "
                                        "digits, '_', '.' and '-'"),
]
# Field names become keys of the event's context in MongoDB: no operator ('$'), no path ('.'), no control character.
FIELD_NAME_PATTERN = r"^(?!\$)[^.\x00-\x1f\x7f]*$(?!\n)"
FIELD_NAME_RULE = [
    validate.Length(min=1, max=100),
    validate.Regexp(FIELD_NAME_PATTERN, error="must not start with '$' or contain '.' or a control character"),
]
# An address: http(s), a host (a name, localhost, IPv4, or IPv6 in brackets; no user:password@), a port
# within 0-65535, then a path, query or fragment of the characters RFC 3986 allows in a URI: a subset of
# what marshmallow's URL accepts, checked by the same pattern the spec shows.
_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?"
_H = "[0-9A-Fa-f]{1,4}"
_IPV6 = "|".join([f"(?:{_H}:){{7}}{_H}", f"(?:{_H}:){{1,7}}:",
                  *(f"(?:{_H}:){{1,{n}}}(?::{_H}){{1,{7 - n}}}" for n in range(6, 0, -1)),
                  f":(?:(?::{_H}){{1,7}}|:)"])
_CHARS = r"(?:[A-Za-z0-9\-._~!$&'()*+,;=:@/?]|%[0-9A-Fa-f]{2})"  # path, query and fragment (RFC 3986)
_PORT = r"(?:[0-9]{1,4}|[1-5][0-9]{4}|6[0-4][0-9]{3}|65[0-4][0-9]{2}|655[0-2][0-9]|6553[0-5])"
ADDRESS_PATTERN = (rf"^https?://(?:localhost|[0-9]{{1,3}}(?:\.[0-9]{{1,3}}){{3}}|\[(?:{_IPV6})\]|"
                   rf"(?:{_LABEL}\.)+[A-Za-z0-9-]{{2,63}}\.?|{_LABEL}\.?)"
                   rf"(?::{_PORT})?(?:/{_CHARS}*)?(?:\?{_CHARS}*)?(?:#{_CHARS}*)?$(?!\n)")
ADDRESS_RULE = [validate.Length(max=2000),
                validate.Regexp(ADDRESS_PATTERN, error="must be an http:// or https:// URL")]
SECRET_RULE = validate.Length(min=16, max=256)
MAX_STEP_INDEX = 1_000_000  # a bound the spec can state; a step beyond the plan is refused by the core anyway
STATUSES = ("pending", "running", "waiting", "completed", "failed", "cancelled")


MAX_SCHEMA_TEXT = 256 * 1024


class JsonSchemaField(fields.Field):
    """A JSON Schema: an object in the API, kept as JSON text in the store (its keys, such as
    `$ref` or a property name holding '.', are not storable as MongoDB keys)."""

    def _serialize(self, value, attr, obj, **kwargs):
        if isinstance(value, str):
            try:
                return json.loads(value)
            except ValueError:
                return value
        return value

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, (dict, bool)):
            raise ValidationError("must be a JSON Schema (an object)")
        return value


class FieldSchema(Schema):
    """One typed input or output: a type name or structure (or a JSON Schema), and its modifiers."""

    name = fields.String(required=True, validate=FIELD_NAME_RULE)
    type = fields.Raw(metadata={
        "description": "a type name, or {\"type\": \"array\", \"items\": T} or "
                       "{\"type\": \"object\", \"fields\": [field, ...]}; may be left out when schema is given",
        "oneOf": [{"type": "string", "enum": list(types.TYPE_NAMES)}, {"type": "object"}]})
    schema = JsonSchemaField(metadata={"type": "object", "description": "a JSON Schema, converted to a type "
                                                                        "when the definition is loaded"})
    required = fields.Boolean(metadata={"description": "false: the field may be absent (default true)"})
    nullable = fields.Boolean(metadata={"description": "true: the field may be null (default false)"})
    enum = fields.List(fields.Raw(), validate=validate.Length(min=1, max=types.MAX_ENUM),
                       metadata={"description": "the only values allowed"})
    description = fields.String(validate=validate.Length(max=2000))

    @post_load
    def _converted(self, data, **_):
        try:
            stored, warnings = types.load_field(data)
        except types.TypeSpecError as error:
            key = error.path.split(".", 1)[0].split("[", 1)[0] or "type"
            # A plain unknown name reads as it always has; a problem inside a structure names its path.
            raise ValidationError(error.problem if error.path == key else str(error), key) from None
        if "schema" in stored:
            text = json.dumps(stored["schema"], separators=(",", ":"), ensure_ascii=False)
            if len(text) > MAX_SCHEMA_TEXT:
                raise ValidationError(f"longer than {MAX_SCHEMA_TEXT // 1024} KiB as JSON", "schema")
            stored["schema"] = text
        if warnings:
            stored[WARNINGS_KEY] = warnings
        return stored

    @validates("name")
    def _no_operator(self, value, **_):
        if value.startswith("$") or "." in value:
            raise ValidationError("must not start with '$' or contain '.'")


# Where a loaded field carries the warnings of its schema's conversion until its definition gathers them.
WARNINGS_KEY = "__warnings"


def gather_warnings(data, labels=("inputs", "outputs")):
    """Move the conversion warnings of each field into the definition's `warnings` (a list of strings)."""
    gathered = []
    for label in labels:
        for index, field in enumerate(data.get(label) or []):
            for warning in field.pop(WARNINGS_KEY, None) or []:
                gathered.append(f"{label}[{index}].{warning}")
    data.pop("warnings", None)
    if gathered:
        data["warnings"] = gathered
    return data


def _unique_names(field_list, label):
    names = [field["name"] for field in field_list]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ValidationError(f"{label} declared twice: {', '.join(duplicated)}", label)


class OutputFieldSchema(FieldSchema):
    """An output, which may say where in the reply it comes from."""

    source = fields.String(data_key="from", attribute="from", validate=validate.Length(min=1, max=1000),
                           metadata={"description": "JMESPath over {status, headers, body} (header names "
                                                    "lower-case); default: the body's top-level key of the "
                                                    "output's name"})


class RequestBodyField(fields.Field):
    """`body`: a list of input names (a JSON object of them), one input name (that input is the whole
    body), or null (no body)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if value is None or isinstance(value, str):
            return value
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return value
        raise ValidationError("must be a list of input names, one input name, or null")


class RequestSchema(Schema):
    """How a call is made: method, path, query parameters, headers and body."""

    method = fields.String(load_default="POST", validate=validate.OneOf(("GET", "POST", "PUT", "PATCH", "DELETE")))
    path = fields.String(validate=validate.Length(min=1, max=2000),
                         metadata={"description": "appended to the address; {input} placeholders (RFC 6570 "
                                                  "simple expansion, percent-encoded, '/' included)"})
    query = fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=200)),
                        values=fields.String(validate=FIELD_NAME_RULE), validate=validate.Length(max=100),
                        metadata={"description": "query parameter -> input; an array input repeats the parameter"})
    headers = fields.Dict(keys=fields.String(validate=validate.Length(min=1, max=200)),
                          values=fields.String(validate=validate.Length(max=4000)), validate=validate.Length(max=50),
                          metadata={"description": "header name -> template of scalar inputs and {secret.NAME}"})
    body = RequestBodyField(allow_none=True, metadata={
        "description": "input names (a JSON object of them), one object input (the whole body), or null (none); "
                       "default: the inputs placed nowhere else, for POST, PUT and PATCH"})


class ReplyBodySchema(FieldSchema):
    """The type of a reply's body, as a field's: a type name or structure, or a JSON Schema."""

    class Meta:
        exclude = ("name", "required")

    @post_load
    def _converted(self, data, **kwargs):
        stored = super()._converted({**data, "name": "body"}, **kwargs)
        stored.pop("name", None)
        return stored


class ReplySchema(Schema):
    """What a service's successful reply holds, when it is known (an OpenAPI document says it)."""

    body = fields.Nested(ReplyBodySchema, required=True, metadata={
        "description": "the body's type: each output's `from` (or, without one, the body's key of its name) "
                       "is type-checked against it at registration"})


class RetrySchema(Schema):
    max_attempts = fields.Integer(load_default=3, strict=True, validate=validate.Range(min=1, max=20))
    backoff_s = fields.Float(load_default=0.5, validate=validate.Range(min=0, max=60),
                             allow_nan=False)


class RateLimitSchema(Schema):
    """A token bucket: `per_s` calls a second on average, up to `burst` at once (default: per_s, at least 1)."""

    per_s = fields.Float(required=True, allow_nan=False, validate=validate.Range(min=0.001, max=100000))
    burst = fields.Integer(load_default=None, allow_none=True, strict=True, validate=validate.Range(min=1, max=100000))


class BreakerSchema(Schema):
    """A circuit breaker: opened by `failure_threshold` consecutive retryable failures, for `cool_down_s`."""

    failure_threshold = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=1000))
    cool_down_s = fields.Float(load_default=30.0, allow_nan=False, validate=validate.Range(min=0.01, max=86400))


class ServiceSchema(Schema):
    """A service definition as registered."""

    # `import` names POST /services/import, so no service may take it.
    name = fields.String(required=True, validate=[*NAME_RULE, validate.NoneOf(
        ["import"], error="'import' is reserved (POST /services/import); choose another name")],
        metadata={"not": {"enum": ["import"]}})
    address = fields.String(required=True, validate=ADDRESS_RULE, metadata={"format": "uri"})
    description = fields.String(load_default=None, validate=validate.Length(max=2000))
    inputs = fields.List(fields.Nested(FieldSchema), required=True, validate=validate.Length(max=100))
    outputs = fields.List(fields.Nested(OutputFieldSchema), required=True, validate=validate.Length(max=100))
    request = fields.Nested(RequestSchema, load_default=None, allow_none=True,
                            metadata={"description": "how the service is called; default: POST of the inputs"})
    success = fields.List(fields.Integer(validate=validate.Range(min=200, max=599)), load_default=None,
                          allow_none=True, validate=validate.Length(min=1, max=50), metadata={
                              "description": "the statuses that complete the step; default: every 2xx (202 "
                                             "waits for the callback unless listed)"})
    timeout_s = fields.Float(load_default=None, allow_nan=False,
                             validate=validate.Range(min=0.001, max=3600))
    callback_timeout_s = fields.Float(load_default=None, allow_nan=False,
                                      validate=validate.Range(min=0.001, max=30 * 86400))
    retry = fields.Nested(RetrySchema, load_default=None)
    max_concurrency = fields.Integer(load_default=None, allow_none=True, strict=True,
                                     validate=validate.Range(min=1, max=10000), metadata={
                                         "description": "calls in flight to it at most, across every process"})
    rate_limit = fields.Nested(RateLimitSchema, load_default=None, allow_none=True)
    breaker = fields.Nested(BreakerSchema, load_default=None, allow_none=True)
    reply = fields.Nested(ReplySchema, load_default=None, allow_none=True, metadata={
        "description": "the type of a successful reply's body, when known; outputs are checked against it"})
    warnings = fields.List(fields.String(), metadata={
        "description": "read-only: where a schema said more than the type model can (it became any)"})

    @validates_schema
    def _unique_fields(self, data, **_):
        _unique_names(data.get("inputs") or [], "inputs")
        _unique_names(data.get("outputs") or [], "outputs")

    @validates("address")
    def _no_credentials(self, value, **_):
        # An address is shown by the API, the UI and every event's plan: a password in it would leak.
        try:
            parts = urlsplit(value)
            parts.port  # noqa: B018 - urlsplit checks the host and the port only when asked
        except ValueError:
            raise ValidationError("must be an http:// or https:// URL") from None
        if "@" in parts.netloc:
            raise ValidationError("must not hold credentials (user:password@); give the service "
                                  "another way to authenticate callers")

    @post_load
    def _gather_warnings(self, data, **_):
        data = gather_warnings(data)
        body = (data.get("reply") or {}).get("body") or {}
        reply_warnings = [f"reply.body.{warning}" for warning in body.pop(WARNINGS_KEY, None) or []]
        if reply_warnings:
            data["warnings"] = [*data.get("warnings", []), *reply_warnings]
        return data


class OperationSchema(Schema):
    """A rename at a step boundary."""

    service = fields.String(required=True, validate=NAME_RULE)
    step = fields.Integer(strict=True, validate=validate.Range(min=0, max=MAX_STEP_INDEX))
    inputs = fields.Dict(keys=fields.String(validate=FIELD_NAME_RULE),
                         values=fields.String(validate=FIELD_NAME_RULE))
    outputs = fields.Dict(keys=fields.String(validate=FIELD_NAME_RULE),
                          values=fields.String(validate=FIELD_NAME_RULE))


class OperationList(fields.List):
    """The operations of a workflow; an empty object, which clients of the first prototype send, is none."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, dict):
            if value:
                raise ValidationError("must be a list of operations (an empty object {} is taken as none), "
                                      f"not an object with keys {', '.join(sorted(map(str, value))[:5])}")
            return []
        return super()._deserialize(value, attr, data, **kwargs)


MAX_STEPS_TEXT = 512 * 1024
STEP_ID_PATTERN = r"^[A-Za-z_][A-Za-z0-9_-]{0,63}$(?!\n)"


class StepsField(fields.Field):
    """A step tree (version 2): a list of step objects, checked in depth by the plan (language.plan);
    here only bounded in size."""

    def _deserialize(self, value, attr, data, **kwargs):
        if not isinstance(value, list):
            raise ValidationError("must be a list of steps (objects with an id and one kind: call, if, "
                                  "switch, parallel, map, workflow, sleep)")
        if not value:
            raise ValidationError("must hold at least one step")
        if len(value) > 500:
            raise ValidationError("at most 500 steps")
        try:
            size = len(json.dumps(value, separators=(",", ":")))
        except (TypeError, ValueError, RecursionError):
            raise ValidationError("must be JSON: a list of step objects") from None
        if size > MAX_STEPS_TEXT:
            raise ValidationError(f"at most {MAX_STEPS_TEXT} bytes of JSON, got {size}")
        for index, step in enumerate(value):
            if not isinstance(step, dict):
                raise ValidationError(f"steps[{index}] must be an object with an id and one kind")
        return value


class ConcurrencySchema(Schema):
    """At most `limit` running events per value of `key`, a JMESPath over the event's data."""

    key = fields.String(required=True, validate=validate.Length(min=1, max=500))
    limit = fields.Integer(required=True, strict=True, validate=validate.Range(min=1, max=10000))

    @validates("key")
    def _compiles(self, value, **_):
        try:
            expressions.compile_expression(value)
        except expressions.ExpressionError as error:
            raise ValidationError(f"not a JMESPath expression: {error}") from None


class WorkflowSchema(Schema):
    """A workflow definition as registered: a chain (`services`, version 1) or a tree (`steps`, version 2)."""

    name = fields.String(required=True, validate=NAME_RULE)
    description = fields.String(load_default=None, validate=validate.Length(max=2000))
    services = fields.List(fields.String(validate=NAME_RULE), validate=validate.Length(min=1, max=100), metadata={
        "description": "version 1: the services called in order (give this or steps). For a workflow with "
                       "steps, read-only: the services its steps call"})
    steps = StepsField(metadata={
        "type": "array", "maxItems": 500, "items": {"type": "object", "additionalProperties": True},
        "description": "version 2: a tree of steps (call, if, switch, parallel, map, workflow, sleep), each "
                       "with an id; give this or services"})
    inputs = fields.List(fields.Nested(FieldSchema), required=True, validate=validate.Length(max=100))
    outputs = fields.List(fields.Nested(FieldSchema), required=True, validate=validate.Length(max=100))
    search = fields.List(fields.String(validate=validate.Length(min=1, max=200)), validate=validate.Length(max=20),
                         metadata={"description": "JMESPath expressions over the context whose values events "
                                                  "keep, indexed, for GET /events?attr.<path>=<value>"})
    operations = OperationList(fields.Nested(OperationSchema), load_default=list,
                               validate=validate.Length(max=200))
    concurrency = fields.Nested(ConcurrencySchema, load_default=None, allow_none=True, metadata={
        "description": "at most `limit` running events per value of `key` (JMESPath over the data); the others "
                       "queue in the order they came"})
    ingest_token = fields.String(load_only=True, validate=SECRET_RULE, metadata={
        "description": "write-only: a secret senders may present as X-Machinery-Token instead of an API key "
                       "(kept as a SHA-256 digest)"})
    ingest_hmac_secret = fields.String(load_only=True, validate=SECRET_RULE, metadata={
        "description": "write-only: senders may sign the raw body with HMAC-SHA256 under this secret and send "
                       "X-Hub-Signature-256: sha256=<hex> instead of an API key"})

    @validates_schema
    def _unique_fields(self, data, **_):
        _unique_names(data.get("inputs") or [], "inputs")
        _unique_names(data.get("outputs") or [], "outputs")

    @validates_schema
    def _one_form(self, data, **_):
        if "steps" in data and "services" in data:
            raise ValidationError("give either services (a chain) or steps (a tree), not both", "steps")
        if "steps" not in data and "services" not in data:
            raise ValidationError("a workflow needs services (a chain) or steps (a tree)", "services")
        if "steps" in data and data.get("operations"):
            raise ValidationError("operations rename a chain's steps; a tree says in and out on each step",
                                  "operations")

    warnings = fields.List(fields.String(), metadata={
        "description": "read-only: where a schema said more than the type model can (it became any)"})

    @post_load
    def _seal_secrets(self, data, **_):
        return auth.seal_workflow(gather_warnings(data))


class ServiceOutSchema(ServiceSchema):
    service_id = fields.String(required=True)
    ack_date = fields.DateTime(required=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    used_by = fields.List(fields.String())
    flow = fields.Dict(dump_only=True, metadata={
        "description": "read-only, with max_concurrency, rate_limit or breaker set: calls in flight, tokens left, "
                       "the breaker's state (closed, open, half_open), failures and opened_at"})


class WorkflowOutSchema(WorkflowSchema):
    workflow_id = fields.String(required=True)
    workflows = fields.List(fields.String(), dump_only=True, metadata={
        "description": "read-only: the workflows a tree's steps run as children"})
    ingest_auth = fields.Function(auth.ingest_methods, dump_only=True, metadata={
        "type": "array", "items": {"type": "string", "enum": ["token", "hmac"]},
        "description": "which ingestion secrets the workflow has (token, hmac); never the secrets"})
    version = fields.Integer(required=True)
    ack_date = fields.DateTime(required=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    paused = fields.Dict(allow_none=True, dump_only=True, dump_default=None, metadata={
        "description": "read-only: while the workflow is paused, who paused it and when ({by, at}); new "
                       "events wait, pending, until it is resumed"})


class PageArgsSchema(Schema):
    class Meta:
        unknown = EXCLUDE

    page = fields.Integer(load_default=1, validate=validate.Range(min=1, max=1_000_000))
    page_size = fields.Integer(load_default=20, validate=validate.Range(min=1, max=100))


class EventListArgsSchema(PageArgsSchema):
    workflow = fields.String(validate=validate.Length(min=1, max=100),
                             metadata={"description": "workflow id or name"})
    status = fields.String(validate=validate.OneOf(STATUSES))


def page_of(item_schema):
    """A page envelope around a list of items."""
    return Schema.from_dict({
        "items": fields.List(fields.Nested(item_schema)),
        "page": fields.Integer(),
        "page_size": fields.Integer(),
        "total": fields.Integer(),
    }, name=f"{item_schema.__name__.replace('Schema', '')}Page")


class StepSchema(Schema):
    """One run of one step."""

    step = fields.Integer()
    service = fields.String()
    status = fields.String()
    run = fields.Integer()
    attempts = fields.Integer()
    started_at = fields.DateTime()
    finished_at = fields.DateTime()
    duration_ms = fields.Float()
    inputs = fields.Dict()
    outputs = fields.Dict()
    error = fields.Dict()
    outputs_dropped = fields.Boolean(metadata={"description": "the outputs were received but not stored: they "
                                                              "did not fit in the record (error kind too_large)"})
    attempt_log = fields.List(fields.Dict())
    span_id = fields.String()
    request = fields.Dict(metadata={"description": "what was sent: method, url, the service's own headers "
                                                   "(those built from a secret as ***)"})
    # A tree event's records (step_runs) say which instance of which node they are.
    instance = fields.String(metadata={"description": "a tree event's instance: the node's path, e.g. "
                                                      "reserve[3]/hold (item 3 of map reserve)"})
    node = fields.String(metadata={"description": "the id of the tree node it is an instance of"})
    kind = fields.String(metadata={"description": "call, poll, sleep or workflow"})
    items = fields.List(fields.Integer(), metadata={"description": "the indices of the enclosing map items"})
    item = fields.Integer(allow_none=True, metadata={"description": "the innermost map item, or null"})
    expires = fields.DateTime(metadata={"description": "a call waiting for its callback: the deadline"})
    until = fields.DateTime(metadata={"description": "a sleep: when it ends"})
    workflow = fields.String(metadata={"description": "a child workflow step: the workflow it started"})
    child_event_id = fields.String(metadata={"description": "a child workflow step: the child event"})
    polls = fields.Integer(metadata={"description": "a poll step: how many times the service was called"})
    last_outputs = fields.Dict(metadata={"description": "a poll step: the outputs of its latest reply"})
    last_polled_at = fields.DateTime(metadata={"description": "a poll step: when it last called the service"})
    next_poll_at = fields.DateTime(metadata={"description": "a waiting poll step: when it calls again"})

    @pre_dump
    def _items_of_dict(self, record, **kwargs):
        # A dict without "items" would answer its own .items method: say it is absent instead.
        if isinstance(record, dict) and "items" not in record:
            return {**record, "items": None}
        return record

    @post_dump
    def _no_items(self, data, **kwargs):
        if data.get("items") is None:
            data.pop("items", None)
        return data


class StepRunSchema(StepSchema):
    """One record of a tree event's steps (GET /events/<id>/steps)."""

    event_id = fields.String()


class StepRunArgsSchema(PageArgsSchema):
    node = fields.String(validate=validate.Length(min=1, max=64), metadata={"description": "a node id"})
    item = fields.Integer(validate=validate.Range(min=0), metadata={"description": "a map item's index"})
    status = fields.String(validate=validate.OneOf(["completed", "failed", "waiting", "cancelled"]))


StepRunPageSchema = page_of(StepRunSchema)


class WaitingSchema(StepSchema):
    """The step waiting for its service's callback."""

    expires = fields.DateTime()


class WebhookSchema(Schema):
    """Delivery of the completion webhook to callback_url."""

    status = fields.String()
    attempts = fields.List(fields.Dict())
    next_at = fields.DateTime(allow_none=True)


class EventBodySchema(Schema):
    """An event: the envelope {"data": {...}, "callback_url", "idempotency_key"}, or any JSON
    object taken whole as the data (so plain webhook senders work)."""

    class Meta:
        unknown = INCLUDE

    data = fields.Raw(metadata={"description": "the event's data, matching the workflow's inputs"})
    callback_url = fields.Raw(metadata={"description": "notified with the final record when the event ends"})
    idempotency_key = fields.Raw(metadata={"description": "the same key for the same workflow returns the "
                                                          "first event"})


class StepRefField(fields.Field):
    """A step named by its index (a chain, version 1) or by its id (a tree, version 2)."""

    def _deserialize(self, value, attr, data, **kwargs):
        if isinstance(value, int) and not isinstance(value, bool):
            if not 0 <= value <= MAX_STEP_INDEX:
                raise ValidationError(f"a step index is from 0 to {MAX_STEP_INDEX}")
            return value
        if isinstance(value, str):
            if not re.match(STEP_ID_PATTERN, value):
                raise ValidationError("a step id is 1 to 64 letters, digits, '_' or '-', starting with a "
                                      "letter or '_'")
            return value
        raise ValidationError("must be a step index (an integer) or a step id (a string)")


class ReplaySchema(Schema):
    """Resume or replay an event."""

    from_step = StepRefField(metadata={
        "oneOf": [{"type": "integer", "minimum": 0, "maximum": MAX_STEP_INDEX},
                  {"type": "string", "pattern": STEP_ID_PATTERN, "minLength": 1, "maxLength": 64}],
        "description": "replay from this step: its index (0-based) in a chain, or a step id (a chain's step "
                       "i is step-i); default: the failed step"})
    item = fields.Integer(strict=True, validate=validate.Range(min=0, max=MAX_STEP_INDEX), metadata={
        "description": "with a step inside a map: replay that item only (0-based)"})
    context = fields.Dict(keys=fields.String(), metadata={"description": "values to change in the context "
                                                                         "before that step"})


class EventAckSchema(Schema):
    """What POST /e/<workflow> answers."""

    event_id = fields.String(required=True)
    workflow_id = fields.String()
    workflow = fields.String(attribute="workflow_name")
    ack_date = fields.DateTime(required=True)
    status = fields.String(required=True, validate=validate.OneOf(STATUSES))
    outputs = fields.Dict(allow_none=True)
    error = fields.Dict(allow_none=True)
    held = fields.String(allow_none=True, metadata={
        "description": "paused: a pending event its paused workflow holds until it is resumed"})


class EventSchema(EventAckSchema):
    """An event's whole record."""

    workflow_version = fields.Integer()
    data = fields.Dict()
    context = fields.Dict()
    plan = fields.Dict()
    steps = fields.List(fields.Nested(StepSchema))
    waiting = fields.Nested(WaitingSchema, allow_none=True)
    progress = fields.Dict(metadata={"description": "a tree event: per node id, {n, done, failed, running, "
                                                    "waiting} instances and, for if and switch, the branches "
                                                    "taken ({branch: count})"})
    parent = fields.Dict(allow_none=True, metadata={"description": "a child workflow's event: the "
                                                                   "{event_id, instance, run} that started it"})
    concurrency = fields.Dict(allow_none=True, metadata={
        "description": "an event of a workflow with `concurrency`: its key, the key's limit, and whether it "
                       "holds its turn"})
    queued = fields.Dict(allow_none=True, metadata={
        "description": "a step its service's flow control holds back: service, why (max_concurrency, rate_limit "
                       "or breaker), message, step, since, and until (when it is due again)"})
    schedule = fields.Dict(allow_none=True, metadata={"description": "an event a schedule sent: the "
                                                                     "{name, tick} it was sent for"})
    next_step = fields.Integer()
    run = fields.Integer()
    runs = fields.List(fields.Dict())
    claims = fields.List(fields.Dict(), metadata={"description": "the last 20 claims: who held it, when"})
    claim_count = fields.Integer(metadata={"description": "how many times it was claimed in all"})
    last_error = fields.Dict(allow_none=True, metadata={
        "description": "the last error a run of it raised, if any (what kind stuck names)"})
    cancelled = fields.Dict(allow_none=True, metadata={
        "description": "a cancelled event: who cancelled it, when, why, the status it had, and whether "
                       "what it was running is still in flight ({by, at, reason, previous_status, in_flight}: "
                       "in_flight turns false once the calls in flight have finished and are recorded)"})
    callback_url = fields.String(allow_none=True)
    webhook = fields.Nested(WebhookSchema, allow_none=True)
    idempotency_key = fields.String(allow_none=True)
    updated_at = fields.DateTime()
    finished_at = fields.DateTime(allow_none=True)


class EventSummarySchema(EventAckSchema):
    """An event in a list."""

    workflow_version = fields.Integer()
    next_step = fields.Integer()
    updated_at = fields.DateTime()
    finished_at = fields.DateTime(allow_none=True)
    attrs = fields.List(fields.Dict(), metadata={
        "description": "the values of the workflow's search paths, as of the last write of the context"})


class ErrorSchema(Schema):
    """The one error body every endpoint answers with."""

    code = fields.Integer(required=True, metadata={"description": "HTTP status code"})
    status = fields.String(required=True, metadata={"description": "HTTP status name"})
    message = fields.String(required=True, metadata={"description": "What went wrong, in one sentence"})
    errors = fields.Raw(metadata={"description": "Details: each field, step or item at fault"})


def json_default(value: Any) -> Any:
    """JSON for what the stdlib cannot encode: datetimes as ISO 8601 in UTC."""
    if isinstance(value, datetime):
        return (value if value.tzinfo else value.replace(tzinfo=UTC)).isoformat()
    if isinstance(value, DBRef):  # a large value kept as a file (runtime.payloads)
        return {"$ref": value.id, "bytes": value.bytes, "sha256": value.sha256}
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def to_json(value: Any) -> bytes:
    """Compact JSON bytes, datetimes as ISO 8601."""
    return json.dumps(value, separators=(",", ":"), default=json_default).encode()


service_schema = ServiceSchema()
workflow_schema = WorkflowSchema()
service_out_schema = ServiceOutSchema()
workflow_out_schema = WorkflowOutSchema()
event_ack_schema = EventAckSchema()
event_schema = EventSchema()

"""Marshmallow schemas for services, workflows, events and the error body, as instances to share."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from marshmallow import (
    EXCLUDE,
    INCLUDE,
    Schema,
    ValidationError,
    fields,
    post_load,
    validate,
    validates,
    validates_schema,
)

from machinery import auth
from machinery.language import types

NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.\-]*$"
NAME_RULE = validate.And(
    validate.Length(min=1, max=100),
    validate.Regexp(NAME_PATTERN, error="must start with a letter or digit and hold only letters, "
                                        "digits, '_', '.' and '-'"),
)
# Field names become keys of the event's context in MongoDB: no operator ('$'), no path ('.'), no control character.
FIELD_NAME_RULE = validate.And(
    validate.Length(min=1, max=100),
    validate.Regexp(r"^(?!\$)[^.\x00-\x1f\x7f\ud800-\udfff]*$",
                    error="must not start with '$' or contain '.' or a control character"),
)
SECRET_RULE = validate.Length(min=16, max=256)
STATUSES = ("pending", "running", "waiting", "completed", "failed")


class FieldSchema(Schema):
    """One typed input or output."""

    name = fields.String(required=True, validate=FIELD_NAME_RULE)
    type = fields.String(required=True, metadata={"enum": list(types.TYPE_NAMES)})
    description = fields.String(validate=validate.Length(max=2000))

    @validates("type")
    def _known_type(self, value, **_):
        try:
            types.canonical(value)
        except ValueError as error:
            raise ValidationError(str(error)) from None

    @validates("name")
    def _no_operator(self, value, **_):
        if value.startswith("$") or "." in value:
            raise ValidationError("must not start with '$' or contain '.'")


def _unique_names(field_list, label):
    names = [field["name"] for field in field_list]
    duplicated = sorted({name for name in names if names.count(name) > 1})
    if duplicated:
        raise ValidationError(f"{label} declared twice: {', '.join(duplicated)}", label)


class RetrySchema(Schema):
    max_attempts = fields.Integer(load_default=3, validate=validate.Range(min=1, max=20))
    backoff_s = fields.Float(load_default=0.5, validate=validate.Range(min=0, max=60),
                             allow_nan=False)


class ServiceSchema(Schema):
    """A service definition as registered."""

    name = fields.String(required=True, validate=NAME_RULE)
    address = fields.Url(required=True, schemes={"http", "https"}, require_tld=False,
                         validate=validate.Length(max=2000),
                         error_messages={"invalid": "must be an http:// or https:// URL"})
    description = fields.String(load_default=None, validate=validate.Length(max=2000))
    inputs = fields.List(fields.Nested(FieldSchema), required=True, validate=validate.Length(max=100))
    outputs = fields.List(fields.Nested(FieldSchema), required=True, validate=validate.Length(max=100))
    timeout_s = fields.Float(load_default=None, allow_nan=False,
                             validate=validate.Range(min=0.001, max=3600))
    callback_timeout_s = fields.Float(load_default=None, allow_nan=False,
                                      validate=validate.Range(min=0.001, max=30 * 86400))
    retry = fields.Nested(RetrySchema, load_default=None)

    @validates_schema
    def _unique_fields(self, data, **_):
        _unique_names(data.get("inputs") or [], "inputs")
        _unique_names(data.get("outputs") or [], "outputs")

    @validates("address")
    def _no_credentials(self, value, **_):
        # An address is shown by the API, the UI and every event's plan: a password in it would leak.
        if "@" in urlsplit(value).netloc:
            raise ValidationError("must not hold credentials (user:password@); give the service "
                                  "another way to authenticate callers")


class OperationSchema(Schema):
    """A rename at a step boundary."""

    service = fields.String(required=True, validate=NAME_RULE)
    step = fields.Integer(validate=validate.Range(min=0))
    inputs = fields.Dict(keys=fields.String(validate=FIELD_NAME_RULE),
                         values=fields.String(validate=FIELD_NAME_RULE))
    outputs = fields.Dict(keys=fields.String(validate=FIELD_NAME_RULE),
                          values=fields.String(validate=FIELD_NAME_RULE))


class WorkflowSchema(Schema):
    """A workflow definition as registered."""

    name = fields.String(required=True, validate=NAME_RULE)
    description = fields.String(load_default=None, validate=validate.Length(max=2000))
    services = fields.List(fields.String(validate=NAME_RULE), required=True,
                           validate=validate.Length(min=1, max=100))
    inputs = fields.List(fields.Nested(FieldSchema), required=True, validate=validate.Length(max=100))
    outputs = fields.List(fields.Nested(FieldSchema), required=True, validate=validate.Length(max=100))
    operations = fields.List(fields.Nested(OperationSchema), load_default=list,
                             validate=validate.Length(max=200))
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

    @post_load
    def _seal_secrets(self, data, **_):
        return auth.seal_workflow(data)


class ServiceOutSchema(ServiceSchema):
    service_id = fields.String(required=True)
    ack_date = fields.DateTime(required=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    used_by = fields.List(fields.String())


class WorkflowOutSchema(WorkflowSchema):
    workflow_id = fields.String(required=True)
    ingest_auth = fields.Function(auth.ingest_methods, dump_only=True, metadata={
        "type": "array", "items": {"type": "string", "enum": ["token", "hmac"]},
        "description": "which ingestion secrets the workflow has (token, hmac); never the secrets"})
    version = fields.Integer(required=True)
    ack_date = fields.DateTime(required=True)
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


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


class ReplaySchema(Schema):
    """Resume or replay an event."""

    from_step = fields.Integer(validate=validate.Range(min=0),
                               metadata={"description": "replay from this step (0-based); default: the failed step"})
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


class EventSchema(EventAckSchema):
    """An event's whole record."""

    workflow_version = fields.Integer()
    data = fields.Dict()
    context = fields.Dict()
    plan = fields.Dict()
    steps = fields.List(fields.Nested(StepSchema))
    waiting = fields.Nested(WaitingSchema, allow_none=True)
    next_step = fields.Integer()
    run = fields.Integer()
    runs = fields.List(fields.Dict())
    claims = fields.List(fields.Dict(), metadata={"description": "the last 20 claims: who held it, when"})
    claim_count = fields.Integer(metadata={"description": "how many times it was claimed in all"})
    last_error = fields.Dict(allow_none=True, metadata={
        "description": "the last error a run of it raised, if any (what kind stuck names)"})
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

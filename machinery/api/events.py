"""Events: POST /e/<workflow> to send one (sync or async), /events to read and retry, /callbacks to complete a step."""

from __future__ import annotations

import functools
import re

from flask import current_app, g, request
from flask.views import MethodView
from marshmallow import Schema, ValidationError, fields, validate, validates_schema
from werkzeug.sansio.utils import get_current_url

from machinery import events, metrics, search
from machinery.api import values as payloads
from machinery.api.body import BadBody, Blueprint, page, read_json
from machinery.exceptions import InvalidData, NotFound
from machinery.ids import random_hex
from machinery.schemas import (
    EventAckSchema,
    EventBodySchema,
    EventListArgsSchema,
    EventSchema,
    EventSummarySchema,
    ReplaySchema,
    StepRunArgsSchema,
    StepRunPageSchema,
)

ingest = Blueprint("ingest", __name__, url_prefix="/e", description="Send an event to a workflow")
bp = Blueprint("events", __name__, url_prefix="/events", description="Events: every run, step by step")
callbacks = Blueprint("callbacks", __name__, url_prefix="/callbacks",
                      description="Single-use URLs async services POST their outputs to")

REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
TRACEPARENT = re.compile(r"^[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}$")
ack_schema = EventAckSchema()


class EventPageArgsSchema(EventListArgsSchema):
    """The event list's query: ?page for the first pages, ?cursor (or ?after) to walk on at any depth."""

    cursor = fields.String(validate=validate.Length(min=1, max=200), metadata={
        "description": "the next_cursor of the page before: the page after it (keyset paging: no duplicate "
                       "and no gap while new events arrive, at any depth)"})
    after = fields.String(validate=validate.Length(min=1, max=200), metadata={"description": "same as cursor"})

    @validates_schema
    def _one_position(self, data, **kwargs):
        if data.get("cursor") and data.get("after") and data["cursor"] != data["after"]:
            raise ValidationError("give cursor or after, not both", "cursor")
        if (data.get("cursor") or data.get("after")) and data.get("page", 1) != 1:
            raise ValidationError("give page or cursor, not both: a cursor already says where the page starts",
                                  "page")


EventPageSchema = Schema.from_dict({
    "items": fields.List(fields.Nested(EventSummarySchema)),
    "page": fields.Integer(),
    "page_size": fields.Integer(),
    "total": fields.Integer(metadata={"description": "the events matching the filter; filtered totals are "
                                                    "counted up to 10000 (see total_is_lower_bound)"}),
    "next_cursor": fields.String(allow_none=True, metadata={
        "description": "pass as ?cursor= for the next page; null on the last page"}),
    "total_is_lower_bound": fields.Boolean(metadata={
        "description": "true when a filtered total reached the counting bound: there are at least `total`"}),
}, name="EventSummaryPage")


def _runtime():
    return current_app.extensions["machinery"]


def is_async() -> bool:
    """Async when asked by ?mode=async or Prefer: respond-async."""
    mode = request.args.get("mode")
    if mode is not None and mode not in ("sync", "async"):
        raise InvalidData(f"mode must be sync or async, not {mode!r}", errors={"mode": ["must be sync or async"]})
    if mode:
        return mode == "async"
    prefer = request.headers.get("Prefer", "")
    return any(part.strip().lower() == "respond-async" for part in prefer.split(","))


def trace_context() -> dict:
    """The request id and W3C trace id this request carries, or new ones."""
    request_id = g.get("request_id") or request.headers.get("X-Request-Id", "")  # the one the logs carry
    match = TRACEPARENT.match(request.headers.get("traceparent", "").strip().lower())
    return {
        "request_id": request_id if REQUEST_ID.match(request_id) else random_hex(128),
        "trace_id": match.group(1) if match and match.group(1) != "0" * 32 else random_hex(128),
    }


def callback_base() -> str:
    return _runtime().config["PUBLIC_URL"] or _host_url(request.scheme, request.host)


@functools.lru_cache(maxsize=64)
def _host_url(scheme: str, host: str) -> str:
    """What `request.host_url` answers, worked out once per scheme and Host (werkzeug re-quotes it each time)."""
    return get_current_url(scheme, host)


def _location(event) -> dict:
    # The path url_for("events.Event") builds, without a URL map lookup on every event sent.
    return {"Location": f"{request.script_root}/events/{event['event_id']}"}


def answer(event: dict, created: bool = True):
    """Shape the reply for an event after a sync run, an async acceptance, or an idempotent repeat."""
    headers = _location(event)
    if not created:
        return event, 200, headers
    status = event["status"]
    if status == "completed":
        return event, 201, headers
    if status == "failed":
        return event, 502, headers
    if status == "cancelled":  # cancelled while the caller waited: the answer is the event as it ended
        return event, 200, headers
    return event, 202, headers


@ingest.route("/<workflow_ref>")
class Ingest(MethodView):
    # Its security depends on the app's API keys: api.auth.document describes it.
    # The core reads the body (an envelope or bare data), so the schema only documents it here.
    @ingest.doc(requestBody={"required": True, "content": {"application/json": {"schema": EventBodySchema}}})
    @ingest.response(201, EventAckSchema, description="Sync: the event ran to completion")
    @ingest.alt_response(200, schema=EventAckSchema, description="Idempotent repeat: the first event, not run again")
    @ingest.alt_response(202, schema=EventAckSchema, description="Async (?mode=async or Prefer: respond-async), "
                                                                 "or a step waits for a service's callback")
    @ingest.alt_response(502, schema=EventAckSchema, description="Sync: a step failed for good; the body "
                                                                 "names the step and the error")
    def post(self, workflow_ref):
        """Send an event to a workflow, by id or name"""
        runtime = _runtime()
        # No such workflow is the first thing to say, whatever the body holds.
        workflow = g.get("ingest_workflow") or runtime.store.get_workflow(workflow_ref)
        body = read_json(request)
        run_async = is_async()
        resolve = payloads.resolving(request.args.get("resolve"))
        owner = None if run_async else runtime.api_owner()
        event, created = events.new_event(
            runtime.store, workflow_ref, body, idempotency_key=request.headers.get("Idempotency-Key"),
            owner=owner, lease_s=runtime.config["LEASE_S"], callback_base=callback_base(), trace=trace_context(),
            allowed_hosts=runtime.config.get("ALLOWED_HOSTS"), workflow=workflow,
        )
        body = None  # stored (its large values as files): not held while the event runs
        if created:
            metrics.event_received(event.get("workflow_name", workflow_ref), run_async)
        if created and (run_async or event["status"] != "running"):  # not running: its workflow is paused
            runtime.queued(event["event_id"])
        elif created:
            event = runtime.run_now(event)
        return answer(payloads.inline(runtime.store, event, resolve), created)


@bp.route("")
class Events(MethodView):
    @bp.arguments(EventPageArgsSchema(), location="query")
    @bp.response(200, EventPageSchema)
    def get(self, args):
        """List events, newest first, by workflow, status and search attributes (attr.<path>[__op]=value)"""
        store = _runtime().store
        workflow = store.get_workflow(args["workflow"]) if args.get("workflow") else None
        attrs = search.parse_filters(request.args.items(multi=True), workflow)
        listed = store.list_events_page(args["page_size"], page=args["page"],
                                        after=args.get("cursor") or args.get("after"),
                                        workflow_id=workflow["workflow_id"] if workflow else None,
                                        status=args.get("status"), attrs=attrs)
        return {**page(listed["items"], listed["total"], args), "next_cursor": listed["next_cursor"],
                "total_is_lower_bound": listed["total_is_lower_bound"]}


@bp.route("/<event_id>")
class Event(MethodView):
    @bp.response(200, EventSchema)
    def get(self, event_id):
        """Read an event's whole record: plan, context, every step"""
        store = _runtime().store
        return events.for_display(store.get_event(event_id), store)


@bp.route("/<event_id>/values/<ref>")
class Value(MethodView):
    @bp.doc(responses={200: {"description": "The value's JSON, streamed", "content": {"application/json": {}}},
                       404: {"description": "No such event, or no such value of it"}})
    def get(self, event_id, ref):
        """Read a large value of an event (a `$ref` of its data, context, outputs or steps)"""
        return payloads.download(_runtime().store, event_id, ref)


@bp.route("/<event_id>/steps")
class Steps(MethodView):
    @bp.arguments(StepRunArgsSchema(), location="query")
    @bp.response(200, StepRunPageSchema)
    def get(self, args, event_id):
        """Page an event's step records: a tree event's by node, map item and status; a version 1 event's steps"""
        store = _runtime().store
        event = store.get_event(event_id)
        size, number = args["page_size"], args["page"]
        if (event.get("plan") or {}).get("version") == 2:
            items, total = store.page_step_runs(event_id, node=args.get("node"), item=args.get("item"),
                                                status=args.get("status"), page=number, page_size=size)
            return page(items, total, args)
        steps = events.for_display(event).get("steps") or []
        if args.get("status"):
            steps = [step for step in steps if step.get("status") == args["status"]]
        if args.get("node"):
            steps = [step for step in steps if f"step-{step.get('step')}" == args["node"]]
        return page(steps[(number - 1) * size:number * size], len(steps), args)


@bp.route("/<event_id>/retry")
class Retry(MethodView):
    @bp.doc(requestBody={"required": False, "content": {"application/json": {"schema": ReplaySchema}}})
    @bp.response(200, EventAckSchema, description="Sync: the retried event ran to completion")
    @bp.alt_response(202, schema=EventAckSchema, description="Async, or waiting for a callback")
    @bp.alt_response(502, schema=EventAckSchema, description="Sync: it failed again")
    def post(self, event_id):
        """Resume a failed event from its failed step, or replay it from any step with edited values"""
        runtime = _runtime()
        args = {}
        if request.get_data(cache=True).strip():
            args = ReplaySchema().load(read_json(request))
        run_async = is_async()
        resolve = payloads.resolving(request.args.get("resolve"))
        event = events.retry_event(runtime.store, event_id, args.get("from_step"), args.get("context"),
                                   owner=None if run_async else runtime.api_owner(),
                                   lease_s=runtime.config["LEASE_S"], item=args.get("item"))
        if run_async:
            runtime.queued(event["event_id"])
            return event, 202, _location(event)
        event = runtime.run_now(event)
        body, status, headers = answer(payloads.inline(runtime.store, event, resolve))
        return body, 200 if status == 201 else status, headers


@callbacks.route("/<token>")
class Callback(MethodView):
    @callbacks.doc(security=[])  # the single-use token in the URL is the credential
    @callbacks.doc(requestBody={"required": True, "content": {"application/json": {"schema": {
        "description": "the outputs of the waiting step's service: a JSON object of them, or, for a service "
                       "whose outputs say `from`, any JSON that its expressions read as the reply's body"}}}})
    @callbacks.response(200, EventAckSchema, description="The step completed; the event goes on")
    def post(self, token):
        """Complete a waiting step with the outputs of its async service (single use)"""
        runtime = _runtime()
        try:
            body = read_json(request)
        except BadBody:
            # An unknown token is the first thing to say, whatever the body holds.
            event, spent = runtime.store.find_by_callback(events.hash_token(token))
            if event is None and not spent:
                raise NotFound("unknown callback token") from None
            raise
        event = events.complete_callback(runtime.store, token, body, request.headers, runtime.executor.secrets.value)
        if event["status"] in ("pending", "waiting"):  # a tree event waiting on other things is woken too
            runtime.queued(event["event_id"])
        return event

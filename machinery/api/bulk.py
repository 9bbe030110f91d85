"""Bulk actions: POST /events/bulk to count (dry run) or act on every event a filter matches, and
GET /events/bulk/<job> to follow the job that applies it."""

from __future__ import annotations

from flask import current_app, g, jsonify, request
from flask.views import MethodView
from marshmallow import Schema, fields

from machinery.api.body import Blueprint, page, read_json
from machinery.runtime import bulk
from machinery.schemas import PageArgsSchema

bp = Blueprint("bulk", __name__, url_prefix="/events/bulk",
               description="Bulk actions: retry, replay or cancel every event a filter matches, as a tracked job")

FILTER_DOC = {
    "type": "object", "additionalProperties": False, "properties": {
        "workflow": {"type": "string", "description": "workflow id or name"},
        "status": {"type": "string", "enum": list(bulk.STATUSES)},
        "created_after": {"type": "string", "format": "date-time", "description": "accepted at or after"},
        "created_before": {"type": "string", "format": "date-time", "description": "accepted before"},
        "error_kind": {"type": "string", "description": "the kind of the event's error: timeout, http_status, ..."},
        "failed_step": {"type": "string", "description": "the step id the event failed at (step-N for version 1)"},
        "attrs": {"type": "object", "description": "search filters, {\"<path>[__gt|__gte|__lt|__lte|__ne]\": value}"},
    }}
REQUEST_DOC = {"type": "object", "required": ["action"], "additionalProperties": False, "properties": {
    "action": {"type": "string", "enum": list(bulk.ACTIONS)},
    "filter": FILTER_DOC,
    "dry_run": {"type": "boolean", "default": False, "description": "count what matches, change nothing"},
    "from_step": {"type": "string", "description": "replay: the step to replay from (default: the first)"},
}}


class BulkJobSchema(Schema):
    """A bulk job and its progress."""

    job_id = fields.String()
    action = fields.String()
    filter = fields.Dict()
    from_step = fields.Raw(allow_none=True)
    status = fields.String(metadata={"description": "pending, running, completed"})
    matched = fields.Integer(metadata={"description": "the events matching when the job was made"})
    matched_is_lower_bound = fields.Boolean()
    handled = fields.Integer(metadata={"description": "done + skipped + failed"})
    done = fields.Integer(metadata={"description": "events acted on (a retry or replay queued them to run)"})
    skipped = fields.Integer(metadata={"description": "events the action does not apply to"})
    failed = fields.Integer(metadata={"description": "events the action could not be applied to"})
    unmatched = fields.Integer(metadata={"description": "events passed over: out of the filter's status by then"})
    skipped_why = fields.List(fields.Dict(), metadata={"description": "[{why, count}]"})
    samples = fields.Dict(metadata={"description": "the first event ids of each outcome, with why"})
    progress = fields.Float(metadata={"description": "0 to 1"})
    pages = fields.Integer()
    claims = fields.Integer()
    created_at = fields.DateTime()
    updated_at = fields.DateTime()
    finished_at = fields.DateTime(allow_none=True)
    created_by = fields.String(allow_none=True)


class DryRunSchema(Schema):
    """What a dry run answers: the count, and a sample."""

    dry_run = fields.Boolean()
    action = fields.String()
    filter = fields.Dict()
    matched = fields.Integer(metadata={"description": "events matching the filter (counted up to 10000)"})
    matched_is_lower_bound = fields.Boolean()
    applicable = fields.Integer(metadata={"description": "of them, those in a status the action applies to"})
    applies_to = fields.List(fields.String())
    sample = fields.List(fields.String(), metadata={"description": "the ids of the newest matching events"})


dry_run_schema = DryRunSchema()


def _runtime():
    return current_app.extensions["machinery"]


def start_job(runtime, checked: dict, created_by: str | None) -> dict:
    """Store a job for a checked request and wake this process's bulk runner, so that it starts at once."""
    job = bulk.create_job(runtime.store, checked, created_by=created_by)
    if runtime.worker is not None and runtime.worker.bulk is not None:
        runtime.worker.bulk.wake()
    return job


@bp.route("")
class BulkJobs(MethodView):
    @bp.doc(requestBody={"required": True, "content": {"application/json": {"schema": REQUEST_DOC}}})
    @bp.response(202, BulkJobSchema, description="The job is stored; GET its Location to follow it")
    @bp.alt_response(200, schema=DryRunSchema, description="dry_run: how many events match; nothing changed")
    def post(self):
        """Retry, replay or cancel every event a filter matches (dry_run: count them first)"""
        runtime = _runtime()
        checked = bulk.check_request(runtime.store, read_json(request))
        if checked["dry_run"]:
            # A second success shape: dumped here, since the view's schema is the job's.
            return jsonify(dry_run_schema.dump(bulk.dry_run(runtime.store, checked)))
        job = start_job(runtime, checked, created_by=g.get("principal"))
        return bulk.shown_job(job), 202, {"Location": f"{request.script_root}/events/bulk/{job['job_id']}"}

    @bp.arguments(PageArgsSchema, location="query")
    @bp.response(200, Schema.from_dict({"items": fields.List(fields.Nested(BulkJobSchema)), "page": fields.Integer(),
                                        "page_size": fields.Integer(), "total": fields.Integer()},
                                       name="BulkJobPage"))
    def get(self, args):
        """List bulk jobs, newest first"""
        items, total = _runtime().store.bulk_jobs.list(args["page"], args["page_size"])
        return page([bulk.shown_job(job) for job in items], total, args)


@bp.route("/<job_id>")
class BulkJob(MethodView):
    @bp.response(200, BulkJobSchema)
    def get(self, job_id):
        """Read a bulk job's progress and result"""
        return bulk.shown_job(_runtime().store.bulk_jobs.get(job_id))

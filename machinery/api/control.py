"""Hold and stop work: POST /events/<id>/cancel, POST /workflows/<ref>/pause and /resume."""

from __future__ import annotations

from flask import current_app, g, request
from flask.views import MethodView
from marshmallow import EXCLUDE, Schema, fields, validate

from machinery import events
from machinery.api.body import Blueprint, read_json
from machinery.runtime import cancel
from machinery.schemas import EventSchema, WorkflowOutSchema

bp = Blueprint("control", __name__, url_prefix="", description="Cancel events, pause and resume workflows")


class CancelSchema(Schema):
    """Why an event is cancelled."""

    class Meta:
        unknown = EXCLUDE

    reason = fields.String(validate=validate.Length(max=cancel.MAX_REASON), allow_none=True,
                           metadata={"description": "kept in the record's cancelled.reason"})


class PausedWorkflowSchema(WorkflowOutSchema):
    """A workflow just paused or resumed."""

    events_held = fields.Integer(metadata={"description": "pause: the pending events it now holds"})
    events_released = fields.Integer(metadata={"description": "resume: the held events released, in the "
                                                             "order they came"})


def _runtime():
    return current_app.extensions["machinery"]


def principal() -> str:
    """Who asks: the API key's name when keys are configured, else anonymous."""
    return g.get("principal") or cancel.ANONYMOUS


@bp.route("/events/<event_id>/cancel")
class Cancel(MethodView):
    @bp.doc(requestBody={"required": False, "content": {"application/json": {"schema": CancelSchema}}})
    @bp.response(200, EventSchema, description="Cancelled: nothing more of it starts; what was in flight "
                                               "finishes and is recorded")
    def post(self, event_id):
        """Cancel an event that has not ended (409 naming its status when it has)"""
        args = {}
        if request.get_data(cache=True).strip():
            args = CancelSchema().load(read_json(request))
        store = _runtime().store
        event = cancel.cancel_event(store, event_id, by=principal(), reason=args.get("reason"),
                                    observer=_runtime().executor.observer)
        return events.for_display(event, store)


@bp.route("/workflows/<ref>/pause")
class Pause(MethodView):
    @bp.response(200, PausedWorkflowSchema, description="Paused: new events are stored pending and wait")
    def post(self, ref):
        """Pause a workflow: its new events wait, pending, until it is resumed; running ones go on"""
        return cancel.pause_workflow(_runtime().store, ref, by=principal())


@bp.route("/workflows/<ref>/resume")
class Resume(MethodView):
    @bp.response(200, PausedWorkflowSchema, description="Resumed: the events that waited start in the order "
                                                        "they came")
    def post(self, ref):
        """Resume a paused workflow: the events that waited start, in the order they came"""
        runtime = _runtime()
        workflow = cancel.resume_workflow(runtime.store, ref, by=principal())
        runtime.queued()
        return workflow

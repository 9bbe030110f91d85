"""The /schedules resource: send an event to a workflow on a cron (in a time zone) or every N seconds."""

from __future__ import annotations

from flask import current_app
from flask.views import MethodView
from marshmallow import Schema, fields, validate

from machinery import schedules
from machinery.api.body import Blueprint, page
from machinery.api.events import callback_base
from machinery.clock import aware_now
from machinery.schedules import MAX_CATCH_UP, MAX_CRON_LENGTH, MAX_EVERY_S, OVERLAPS
from machinery.schemas import NAME_RULE, PageArgsSchema, page_of

bp = Blueprint("schedules", __name__, url_prefix="/schedules",
               description="Schedules: an event sent to a workflow at each tick of a cron or an interval")

class ScheduleSchema(Schema):
    """A schedule as it is defined."""

    name = fields.String(required=True, validate=NAME_RULE)
    workflow = fields.String(required=True, validate=validate.Length(min=1, max=200), metadata={
        "description": "the workflow each tick sends an event to, by id or name (as POST /e/<workflow>)"})
    data = fields.Dict(keys=fields.String(), load_default=dict, metadata={
        "description": "the event's data, checked against the workflow's inputs when the schedule is made"})
    cron = fields.String(allow_none=True, validate=validate.Length(min=1, max=MAX_CRON_LENGTH), metadata={
        "description": "a cron expression (5 fields, or 6 with seconds last; @daily and the like), read in "
                       "`timezone`; give cron or every_s"})
    timezone = fields.String(allow_none=True, validate=validate.Length(min=1, max=64), metadata={
        "description": "an IANA time zone the cron is read in (default UTC)"})
    every_s = fields.Integer(strict=True, allow_none=True, validate=validate.Range(min=1, max=MAX_EVERY_S), metadata={
        "description": "a tick every this many seconds, counted from 1970-01-01 UTC; give cron or every_s"})
    overlap = fields.String(validate=validate.OneOf(OVERLAPS), metadata={
        "description": "when the event of the tick before has not ended: skip (default) records the tick as "
                       "skipped; queue holds the tick until that event ends, then sends it"})
    catch_up = fields.Raw(metadata={
        "oneOf": [{"type": "string", "enum": ["none", "one"]},
                  {"type": "object", "required": ["all"], "additionalProperties": False,
                   "properties": {"all": {"type": "integer", "minimum": 1, "maximum": MAX_CATCH_UP}}}],
        "description": 'ticks missed while no process ran (over 60 s late): "none" (default), "one" (the latest), '
                       f'or {{"all": N}} (the latest N, N at most {MAX_CATCH_UP})'})
    paused = fields.Boolean(metadata={"description": "made paused: no tick fires until POST .../resume"})


class SchedulePatchSchema(ScheduleSchema):
    """The fields of a schedule to change: a cron or every_s given replaces the schedule's timing."""

    class Meta:
        exclude = ("name", "paused")


class ScheduleOutSchema(ScheduleSchema):
    """A schedule with its next run and its last ticks."""

    next_run = fields.DateTime(allow_none=True, metadata={"description": "when its next tick falls (UTC)"})
    ticks = fields.List(fields.Dict(), metadata={
        "description": "its last 10 ticks, oldest first: {tick, result: fired | skipped | missed | failed, at, "
                       "event_id and by (the process that sent it) | reason | until and count | error}"})
    counts = fields.Dict(metadata={"description": "its ticks by result, all counted"})
    last_event_id = fields.String(allow_none=True)
    waiting_for = fields.String(allow_none=True, metadata={
        "description": "overlap queue: the unended event the due tick waits for"})
    created_at = fields.DateTime()
    updated_at = fields.DateTime()


def _runtime():
    return current_app.extensions["machinery"]


@bp.route("")
class Schedules(MethodView):
    @bp.arguments(PageArgsSchema, location="query")
    @bp.response(200, page_of(ScheduleOutSchema))
    def get(self, args):
        """List schedules, by name"""
        items, total = _runtime().store.list_schedules(args["page"], args["page_size"])
        return page(items, total, args)

    @bp.arguments(ScheduleSchema)
    @bp.response(201, ScheduleOutSchema, description="Made; its first tick is next_run")
    def post(self, definition):
        """Make a schedule"""
        store = _runtime().store
        checked = schedules.check_definition(store, definition, aware_now())
        checked["callback_base"] = callback_base()  # where the services of its events call back
        return store.insert_schedule(checked)


@bp.route("/<name>")
class Schedule(MethodView):
    @bp.response(200, ScheduleOutSchema)
    def get(self, name):
        """Read a schedule, with its next run and its last ticks"""
        return _runtime().store.get_schedule(name)

    @bp.arguments(SchedulePatchSchema(partial=True))
    @bp.response(200, ScheduleOutSchema)
    def patch(self, changes, name):
        """Change a schedule: a new timing moves its next run; the rest applies from the next tick"""
        store = _runtime().store
        checked = schedules.check_change(store, store.get_schedule(name), changes, aware_now())
        return store.change_schedule(name, checked)

    @bp.response(204)
    def delete(self, name):
        """Delete a schedule (the events it sent are kept)"""
        _runtime().store.delete_schedule(name)


@bp.route("/<name>/pause")
class Pause(MethodView):
    @bp.response(200, ScheduleOutSchema)
    def post(self, name):
        """Pause a schedule: no tick fires until it is resumed"""
        return _runtime().store.change_schedule(name, {"paused": True})


@bp.route("/<name>/resume")
class Resume(MethodView):
    @bp.response(200, ScheduleOutSchema)
    def post(self, name):
        """Resume a paused schedule from its next tick after now (the ticks of the pause are not run)"""
        store = _runtime().store
        schedule = store.get_schedule(name)
        if not schedule["paused"]:
            return schedule
        return store.change_schedule(name, schedules.resumed(schedule, aware_now()), expect={"paused": True})

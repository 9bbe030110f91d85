"""The /ui pages: workflows drawn as graphs, services, and events as timelines, rendered on the server."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any, Mapping
from urllib.parse import urlsplit

import yaml
from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from markupsafe import Markup

from machinery import __version__, event_view, graph, graph_tree, registry
from machinery.api import control, dashboard
from machinery.api.errors import STATUS_OF
from machinery.events import for_display, retry_event
from machinery.exceptions import DataflowError, InvalidData, MachineryError, NotFound
from machinery.language import types
from machinery.runtime import flow, payloads
from machinery.runtime.cancel import cancel_event, pause_workflow, resume_workflow
from machinery.runtime.tree import run_lineage
from machinery.schemas import STATUSES, json_default
from machinery.store import ACTIVE

# A plain Blueprint: these are HTML pages for people, not part of the JSON API's OpenAPI description.
bp = Blueprint("ui", __name__, url_prefix="/ui")

PAGE_SIZE = 25
STATUS_COLOURS = {"pending": "grey", "running": "blue", "waiting": "amber", "completed": "green", "failed": "red",
                  "cancelled": "grey"}
# Inline style attributes position the timeline bars; nothing else inline is allowed.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
       "connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'")


def _runtime():
    return current_app.extensions["machinery"]


def _page() -> int:
    try:
        return min(max(int(request.args.get("page", 1)), 1), 1_000_000)
    except ValueError:
        return 1


def _pages(total: int, page_size: int) -> int:
    return max(1, math.ceil(total / page_size))


@bp.after_request
def _headers(response):
    response.headers.setdefault("Content-Security-Policy", CSP)
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "same-origin")
    return response


@bp.errorhandler(MachineryError)
def _error_page(error: MachineryError):
    code = next((status for kind, status in STATUS_OF.items() if isinstance(error, kind)), 500)
    message = error.message if code != 500 else "internal error; the server log has the details"
    return render_template("error.html", code=code, message=message), code


@bp.app_template_filter("pretty")
def pretty(value: Any) -> str:
    """A value as indented JSON, for <pre> blocks (Jinja escapes it)."""
    return json.dumps(value, indent=2, ensure_ascii=False, default=json_default, sort_keys=False)


@bp.app_template_filter("stored_apart")
def stored_apart(values: Any) -> list[tuple[str, dict]]:
    """The values of a mapping kept as files (runtime.payloads), by name, as the API shows them."""
    if not isinstance(values, dict):
        return []
    return [(name, payloads.shown(value)) for name, value in values.items() if payloads.is_ref(value)]


@bp.app_template_filter("size")
def size(count: Any) -> str:
    """A byte count for people: 20.0 MB, 310 KB, 12 bytes."""
    if not isinstance(count, int):
        return "?"
    for unit, scale in (("GB", 10 ** 9), ("MB", 10 ** 6), ("KB", 10 ** 3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}" if count < 100 * scale else f"{count // scale} {unit}"
    return f"{count} bytes"


@bp.app_template_filter("type_short")
def type_short(field: Any) -> str:
    """A field's type in its short form: ``array<object{sku: string, qty: int}>``."""
    return graph_type(field, limit=None)


def graph_type(field: Any, limit: int | None) -> str:
    try:
        return types.describe(field, limit=limit)
    except (ValueError, TypeError, KeyError):
        return str(field.get("type", "any")) if isinstance(field, Mapping) else "any"


@bp.app_template_filter("type_node")
def type_node(field: Any) -> dict | None:
    """A field's type in normal form (its items and fields to unfold), None when it cannot be read."""
    try:
        return types.normal_type(field)
    except (ValueError, TypeError, KeyError):
        return None


@bp.app_template_filter("call_line")
def call_line(service: Any) -> str:
    """How a service is called: ``GET /orders/{order_id}``, or ``POST <address>`` without a request."""
    return graph.call_line(service or {})


@bp.app_template_filter("when")
def when(value: Any) -> str:
    """A datetime as 'YYYY-MM-DD HH:MM:SS UTC'."""
    if not isinstance(value, datetime):
        return "—" if value is None else str(value)
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


@bp.app_template_filter("duration")
def duration(ms: Any) -> str:
    """Milliseconds as a short human duration."""
    if ms is None:
        return "—"
    ms = float(ms)
    if ms < 1:
        return f"{ms:.2f} ms"
    if ms < 1000:
        return f"{ms:.0f} ms"
    if ms < 60_000:
        return f"{ms / 1000:.2f} s"
    minutes, seconds = divmod(ms / 1000, 60)
    if minutes < 60:
        return f"{minutes:.0f} min {seconds:.0f} s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours:.0f} h {minutes:.0f} min"


@bp.app_template_filter("colour")
def colour(status: Any) -> str:
    """The colour an event or step status is shown in."""
    return STATUS_COLOURS.get(status, "grey")


@bp.app_context_processor
def _globals():
    return {"machinery_version": __version__}


@bp.get("/")
def index():
    """The dashboard: how each workflow does over the last hour and day, from the rollups."""
    return render_template("dashboard.html", **dashboard.dashboard(_runtime()))


@bp.get("/workflows")
def workflows():
    """List workflows."""
    page = _page()
    items, total = _runtime().store.list_workflows(page, PAGE_SIZE)
    return render_template("workflows.html", workflows=items, page=page, pages=_pages(total, PAGE_SIZE),
                           total=total)


@bp.get("/workflows/<ref>")
def workflow(ref: str, message: str | None = None, code: int = 200):
    """One workflow, drawn from its resolved plan, with its latest events."""
    store = _runtime().store
    item = store.get_workflow(ref)
    drawing, problem, plan = None, None, None
    try:
        plan = registry.plan_workflow(store, item)
    except DataflowError as error:
        problem = error.message
    else:
        drawing = Markup(graph.svg(plan, item["name"], link=lambda name: url_for("ui.services") + "#service-" + name))
    events, total = store.list_events(1, 10, workflow_id=item["workflow_id"])
    example = {field["name"]: _example_value(field) for field in item["inputs"]}
    return render_template("workflow.html", workflow=item, plan=plan, drawing=drawing, problem=problem,
                           events=events, events_total=total, message=message,
                           example=json.dumps({"data": example}, ensure_ascii=False),
                           definition=definition_text(definition_of(item))), code


def definition_of(workflow: Mapping[str, Any]) -> dict:
    """A registered workflow as the definition that registers it again: what was given, without what the
    registry adds (ids, versions, dates, the services a tree calls) and without its ingestion secrets."""
    definition = {key: workflow[key] for key in ("name", "description") if workflow.get(key) is not None}
    definition["inputs"] = list(workflow.get("inputs") or [])
    definition["outputs"] = list(workflow.get("outputs") or [])
    if workflow.get("steps") is not None:
        definition["steps"] = workflow["steps"]
    else:
        definition["services"] = list(workflow.get("services") or [])
        if workflow.get("operations"):
            definition["operations"] = workflow["operations"]
    return definition


def definition_text(definition: Mapping[str, Any]) -> str:
    """A definition as YAML to edit: keys in the order given, block style, text as written."""
    return yaml.safe_dump(dict(definition), sort_keys=False, allow_unicode=True, width=100)


STARTER_SERVICE = "upper"


@bp.get("/editor")
def editor():
    """A new workflow: a definition checked as it is typed, drawn, and registered."""
    services, _ = _runtime().store.list_services(1, 1)
    service = services[0] if services else {"name": STARTER_SERVICE, "inputs": [{"name": "message", "type": "string"}],
                                            "outputs": [{"name": "message", "type": "string"}]}
    starter = {"name": "my-workflow", "description": "Edit me: the check runs as you type",
               "inputs": [_starter_field(field) for field in service.get("inputs") or []],
               "outputs": [_starter_field(field) for field in service.get("outputs") or []],
               "steps": [{"id": "first", "call": service["name"]}]}
    return render_template("editor.html", definition=definition_text(starter))


def _starter_field(field: Mapping[str, Any]) -> dict:
    return {key: field[key] for key in ("name", "type", "required") if key in field}


def _example_value(field: Mapping[str, Any]) -> Any:
    try:
        return types.example(field)
    except (ValueError, TypeError, KeyError):
        return None


@bp.get("/services")
def services():
    """List services with the workflows that use each."""
    store = _runtime().store
    page = _page()
    items, total = store.list_services(page, PAGE_SIZE)
    for item in items:
        item["used_by"] = [workflow["name"] for workflow in store.workflows_using(item["name"])]
    flow.show_states(store, items)
    return render_template("services.html", services=items, page=page, pages=_pages(total, PAGE_SIZE), total=total)


SCHEDULE_RESULT_COLOURS = {"fired": "green", "skipped": "amber", "missed": "amber", "failed": "red"}


@bp.get("/schedules")
def schedules():
    """List schedules with their next run and their last tick."""
    page = _page()
    items, total = _runtime().store.list_schedules(page, PAGE_SIZE)
    return render_template("schedules.html", schedules=items, page=page, pages=_pages(total, PAGE_SIZE), total=total,
                           result_colours=SCHEDULE_RESULT_COLOURS)


@bp.get("/events")
def events():
    """List events, newest first, filtered by workflow, status and search attributes."""
    store = _runtime().store
    page = _page()
    workflow_ref = request.args.get("workflow", "").strip()
    status = request.args.get("status", "").strip()
    query = request.args.get("q", "").strip()
    notice = None
    workflow = None
    if status and status not in STATUSES:
        notice = f"unknown status {status!r}; showing every status"
        status = ""
    if workflow_ref:
        try:
            workflow = store.get_workflow(workflow_ref)
        except NotFound:
            notice = f"no workflow {workflow_ref!r}"
    try:
        attrs = ui_bulk.listed_filters(workflow, query)
    except InvalidData as error:
        notice, attrs = error.message, None
    if (notice and workflow_ref and workflow is None) or attrs is None:
        items, total = [], 0
    else:
        items, total = store.list_events(page, PAGE_SIZE, workflow_id=workflow["workflow_id"] if workflow else None,
                                         status=status or None, attrs=attrs)
    names, _ = store.list_workflows(1, 100)
    return render_template("events.html", events=items, page=page, pages=_pages(total, PAGE_SIZE), total=total,
                           workflow_ref=workflow_ref, status=status, statuses=STATUSES, notice=notice,
                           workflow_names=[w["name"] for w in names], query=query, actions=ui_bulk.UI_ACTIONS,
                           bulk=ui_bulk.dry_run_shown(request.args),
                           active=any(event["status"] in ACTIVE for event in items))


@bp.get("/events/<event_id>")
def event(event_id: str):
    """One event as a timeline of its step runs."""
    return _event_page(_runtime().store.get_event(event_id))


@bp.get("/events/<event_id>/live")
def event_live(event_id: str):
    """The part of an event's page that follows the event, alone: what the page swaps in while it runs."""
    response = current_app.make_response(
        render_template("_event.html", **_event_view(_runtime().store.get_event(event_id)), message=None))
    response.headers["Cache-Control"] = "no-store"
    return response


FAILED_SHOWN = 50
# Step runs drawn on a tree event's timeline, map items among them (the first, in the order they started).
TIMELINE_RECORDS = 2000


def _event_page(item: dict, message: str | None = None, code: int = 200, template: str = "event.html"):
    return render_template(template, **_event_view(item), message=message), code


def _event_view(item: dict) -> dict:
    store = _runtime().store
    tree_event = item.get("plan", {}).get("version") == 2
    # A tree event's step runs of its latest lineage, read once: the timeline draws them and, unless
    # they are more than it draws, the top-level records listed below it are among them.
    records = store.step_runs_of(item["event_id"], run_lineage(item), limit=TIMELINE_RECORDS + 1) if tree_event else []
    item = for_display(item, store, records if tree_event and len(records) <= TIMELINE_RECORDS else None)
    view = {"event": item, "active": item["status"] in ACTIVE, "tree": None, "failed": [], "failed_total": 0,
            "record_link": record_link}
    if not tree_event:
        drawn = event_view.timeline(item)
        return {**view, "timeline": drawn, "details": drawn["bars"]}
    # A tree event: its tree with each step's progress and the branches taken, its maps' progress, its
    # failed step records (map items among them), each linked to its record, and a timeline of every
    # step run, map items included, in lanes.
    view["tree"] = Markup(graph_tree.svg(item["plan"], item.get("workflow_name"), progress=item.get("progress"),
                                         link=lambda kind, name: url_for("ui.services") + "#service-" + name
                                         if kind == "call" else url_for("ui.workflow", ref=name)))
    view["failed"], view["failed_total"] = store.page_step_runs(item["event_id"], status="failed",
                                                                page_size=FAILED_SHOWN)
    view["summary"] = event_view.summary(item["plan"], item.get("progress"))
    latest: dict[str, dict] = {}
    for record in records[:TIMELINE_RECORDS]:
        latest[record["instance"]] = record
    shown = {record["instance"]: number for number, record in enumerate(item.get("steps") or [])}
    now = datetime.now(UTC)
    drawn = event_view.timeline(item, latest.values(), now=now)
    for bar in drawn["bars"]:
        record = bar["record"]
        if record.get("instance") in shown and record.get("item") is None:
            bar["href"] = f"#step-record-{shown[record['instance']]}"
        else:
            bar["href"] = record_link(item["event_id"], record)
    drawn["lanes"], drawn["folded"] = event_view.lanes(drawn["bars"])
    drawn["cut"] = len(records) > TIMELINE_RECORDS
    # Its steps below the timeline are its top-level records (as shown), each with how long it took.
    details = [{"record": record, "ms": event_view.run_ms(record, now)} for record in item.get("steps") or []]
    return {**view, "timeline": drawn, "details": details}


def record_link(event_id: str, record: Mapping[str, Any]) -> str:
    """The JSON page of the API holding one step record: its node, and its map item if it has one."""
    if record.get("item") is not None:
        return url_for("events.Steps", event_id=event_id, node=record.get("node"), item=record["item"])
    return url_for("events.Steps", event_id=event_id, node=record.get("node"))


@bp.post("/events/<event_id>/retry")
def retry(event_id: str):
    """Resume a failed event from its failed step (a form, so it works without JavaScript)."""
    if not _same_origin():
        abort(403)
    runtime = _runtime()
    try:
        retry_event(runtime.store, event_id, owner=None, lease_s=runtime.config["LEASE_S"])
    except NotFound:
        raise
    except MachineryError as error:
        code = next((status for kind, status in STATUS_OF.items() if isinstance(error, kind)), 500)
        return _event_page(runtime.store.get_event(event_id), message=error.message, code=code)
    runtime.queued(event_id)
    return redirect(url_for("ui.event", event_id=event_id), code=303)


@bp.post("/events/<event_id>/cancel")
def cancel(event_id: str):
    """Cancel an event that has not ended (a form, as retry is)."""
    if not _same_origin():
        abort(403)
    runtime = _runtime()
    try:
        cancel_event(runtime.store, event_id, by=control.principal(), reason="from the UI",
                     observer=runtime.executor.observer)
    except NotFound:
        raise
    except MachineryError as error:
        code = next((status for kind, status in STATUS_OF.items() if isinstance(error, kind)), 500)
        return _event_page(runtime.store.get_event(event_id), message=error.message, code=code)
    return redirect(url_for("ui.event", event_id=event_id), code=303)


@bp.post("/workflows/<ref>/pause")
def pause(ref: str):
    """Pause a workflow (a form)."""
    return _pause_or_resume(ref, pause_workflow)


@bp.post("/workflows/<ref>/resume")
def resume(ref: str):
    """Resume a paused workflow (a form)."""
    return _pause_or_resume(ref, resume_workflow)


def _pause_or_resume(ref: str, action):
    if not _same_origin():
        abort(403)
    runtime = _runtime()
    try:
        action(runtime.store, ref, by=control.principal())
    except NotFound:
        raise
    except MachineryError as error:
        code = next((status for kind, status in STATUS_OF.items() if isinstance(error, kind)), 500)
        return workflow(ref, message=error.message, code=code)
    runtime.queued()
    return redirect(url_for("ui.workflow", ref=ref), code=303)


def _same_origin() -> bool:
    """Refuse a form posted from another site: browsers send Origin on cross-site POSTs."""
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")
    return urlsplit(origin).netloc == request.host


from machinery.api import ui_bulk  # noqa: E402 - its pages are this blueprint's, so it imports it

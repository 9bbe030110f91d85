"""The /ui pages: workflows drawn as graphs, services, and events as timelines, rendered on the server."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime
from typing import Any, Mapping
from urllib.parse import urlsplit

from flask import Blueprint, abort, current_app, redirect, render_template, request, url_for
from markupsafe import Markup

from machinery import __version__, graph, graph_tree, registry
from machinery.api.errors import STATUS_OF
from machinery.events import for_display, retry_event
from machinery.exceptions import DataflowError, MachineryError, NotFound
from machinery.language import types
from machinery.runtime import payloads
from machinery.schemas import STATUSES, json_default
from machinery.store import ACTIVE

# A plain Blueprint: these are HTML pages for people, not part of the JSON API's OpenAPI description.
bp = Blueprint("ui", __name__, url_prefix="/ui")

PAGE_SIZE = 25
STATUS_COLOURS = {"pending": "grey", "running": "blue", "waiting": "amber", "completed": "green", "failed": "red"}
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
    return redirect(url_for("ui.workflows"))


@bp.get("/workflows")
def workflows():
    """List workflows."""
    page = _page()
    items, total = _runtime().store.list_workflows(page, PAGE_SIZE)
    return render_template("workflows.html", workflows=items, page=page, pages=_pages(total, PAGE_SIZE),
                           total=total)


@bp.get("/workflows/<ref>")
def workflow(ref: str):
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
                           events=events, events_total=total,
                           example=json.dumps({"data": example}, ensure_ascii=False))


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
    return render_template("services.html", services=items, page=page, pages=_pages(total, PAGE_SIZE), total=total)


@bp.get("/events")
def events():
    """List events, newest first, filtered by workflow and status."""
    store = _runtime().store
    page = _page()
    workflow_ref = request.args.get("workflow", "").strip()
    status = request.args.get("status", "").strip()
    notice = None
    workflow_id = None
    if status and status not in STATUSES:
        notice = f"unknown status {status!r}; showing every status"
        status = ""
    if workflow_ref:
        try:
            workflow_id = store.get_workflow(workflow_ref)["workflow_id"]
        except NotFound:
            notice = f"no workflow {workflow_ref!r}"
    if notice and workflow_ref and workflow_id is None:
        items, total = [], 0
    else:
        items, total = store.list_events(page, PAGE_SIZE, workflow_id=workflow_id, status=status or None)
    names, _ = store.list_workflows(1, 100)
    return render_template("events.html", events=items, page=page, pages=_pages(total, PAGE_SIZE), total=total,
                           workflow_ref=workflow_ref, status=status, statuses=STATUSES, notice=notice,
                           workflow_names=[w["name"] for w in names],
                           active=any(event["status"] in ACTIVE for event in items))


@bp.get("/events/<event_id>")
def event(event_id: str):
    """One event as a timeline of its step runs."""
    return _event_page(_runtime().store.get_event(event_id))


FAILED_SHOWN = 50


def _event_page(item: dict, message: str | None = None, code: int = 200):
    store = _runtime().store
    item = for_display(item, store)
    tree, failed, failed_total = None, [], 0
    if item.get("plan", {}).get("version") == 2:
        # A tree event: its tree with each step's progress and the branches taken, and its failed
        # step records (map items among them), each linked to its record.
        tree = Markup(graph_tree.svg(item["plan"], item.get("workflow_name"), progress=item.get("progress"),
                                     link=lambda kind, name: url_for("ui.services") + "#service-" + name
                                     if kind == "call" else url_for("ui.workflow", ref=name)))
        failed, failed_total = store.page_step_runs(item["event_id"], status="failed", page_size=FAILED_SHOWN)
    return render_template("event.html", event=item, timeline=timeline(item), active=item["status"] in ACTIVE,
                           message=message, tree=tree, failed=failed, failed_total=failed_total), code


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


def _same_origin() -> bool:
    """Refuse a form posted from another site: browsers send Origin on cross-site POSTs."""
    origin = request.headers.get("Origin")
    if origin is None or origin == "null":
        return request.headers.get("Sec-Fetch-Site", "same-origin") in ("same-origin", "none")
    return urlsplit(origin).netloc == request.host


def timeline(event: Mapping[str, Any]) -> dict:
    """Bars for an event's step runs, placed on one time axis from the ack date to the end (or now)."""
    records = [dict(record) for record in event.get("steps") or []]
    if event.get("waiting"):
        records.append({**event["waiting"], "status": "waiting"})
    start = event.get("ack_date")
    now = datetime.now(UTC)
    ends = [event.get("finished_at") or None]
    for record in records:
        ends.append(record.get("finished_at") or (now if record["status"] == "waiting" else record.get("started_at")))
    end = max([moment for moment in ends if moment is not None] + [start]) if start else None
    if event.get("status") in ACTIVE:
        end = now
    span_ms = max((end - start).total_seconds() * 1000, 1.0) if start and end else 1.0
    bars = []
    for record in records:
        started = record.get("started_at")
        finished = record.get("finished_at")
        if record["status"] == "waiting":
            length = (now - started).total_seconds() * 1000 if started else 0.0
        else:
            length = record.get("duration_ms") or 0.0
        offset = (started - start).total_seconds() * 1000 if started and start else 0.0
        left = min(max(offset / span_ms * 100, 0.0), 99.5)
        width = min(max(length / span_ms * 100, 0.5), 100.0 - left)
        bars.append({"record": record, "left": round(left, 3), "width": round(width, 3), "ms": length,
                     "finished": finished})
    return {"bars": bars, "span_ms": span_ms, "start": start, "end": end}

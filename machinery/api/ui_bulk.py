"""The /ui side of search and bulk actions: the event list's search box, its "act on all matching"
form (a dry run first, then the job), and a page per bulk job that refreshes while it runs."""

from __future__ import annotations

import shlex
from typing import Any

from flask import abort, redirect, render_template, request, url_for

from machinery import search
from machinery.api.bulk import start_job
from machinery.api.ui import _runtime, _same_origin, bp
from machinery.exceptions import InvalidData, MachineryError, NotFound
from machinery.runtime import bulk

UI_ACTIONS = bulk.ACTIONS


def search_terms(text: str) -> list[tuple[str, str]]:
    """The `path[__op]=value` terms of the search box, split on spaces (quote a value with spaces)."""
    try:
        words = shlex.split(text)
    except ValueError:
        raise InvalidData("the search has an unclosed quote", errors={"q": ["unclosed quote"]}) from None
    terms = []
    for word in words:
        name, equals, value = word.partition("=")
        if not equals:
            raise InvalidData(f"search term {word!r} is not path=value (or path__gt=value, __gte, __lt, __lte, __ne)",
                              errors={"q": [f"not path=value: {word!r}"]})
        terms.append((name, value))
    return terms


def listed_filters(workflow: dict | None, text: str) -> list[tuple[str, str, Any]]:
    """The search box's filters, checked against the workflow's search paths when one is chosen."""
    if not text.strip():
        return []
    return search.parse_filters(search_terms(text), workflow, prefix="")


def bulk_body(form) -> dict:
    """The bulk request a form of the event list stands for: its filter is the list's."""
    given: dict[str, Any] = {}
    if form.get("workflow"):
        given["workflow"] = form["workflow"]
    if form.get("status"):
        given["status"] = form["status"]
    if form.get("q", "").strip():
        given["attrs"] = dict(search_terms(form["q"]))
    return {"action": form.get("action", ""), "filter": given, "dry_run": form.get("go") != "act"}


def dry_run_shown(arguments) -> dict | None:
    """What the list shows after a dry run (its count, carried in the URL) or a refused request."""
    if arguments.get("problem"):
        return {"problem": arguments["problem"][:500]}
    action = arguments.get("action")
    if action not in UI_ACTIONS:
        return None
    try:
        return {"action": action, "matched": int(arguments.get("matched", 0)),
                "applicable": int(arguments.get("applicable", 0)), "applies_to": bulk.APPLIES_TO[action]}
    except ValueError:
        return None


@bp.post("/events/bulk")
def bulk_action():
    """Count (dry run), or act on, every event the list's filter matches."""
    if not _same_origin():
        abort(403)
    runtime = _runtime()
    form = request.form
    arguments = {key: form.get(key) for key in ("workflow", "status", "q") if form.get(key)}
    try:
        checked = bulk.check_request(runtime.store, bulk_body(form))
        if checked["dry_run"]:
            counted = bulk.dry_run(runtime.store, checked)
            return redirect(url_for("ui.events", **arguments, action=checked["action"], matched=counted["matched"],
                                    applicable=counted["applicable"]), code=303)
        job = start_job(runtime, checked, created_by="ui")
    except NotFound:
        raise
    except MachineryError as error:
        return redirect(url_for("ui.events", **arguments, problem=error.message), code=303)
    return redirect(url_for("ui.bulk_job", job_id=job["job_id"]), code=303)


@bp.get("/bulk")
def bulk_jobs():
    """The bulk jobs, newest first."""
    jobs, total = _runtime().store.bulk_jobs.list(1, 50)
    return render_template("bulk_jobs.html", jobs=[bulk.shown_job(job) for job in jobs], total=total)


@bp.get("/bulk/<job_id>")
def bulk_job(job_id: str):
    """One bulk job's progress; the page refreshes itself until the job completes."""
    job = bulk.shown_job(_runtime().store.bulk_jobs.get(job_id))
    return render_template("bulk_job.html", job=job, active=job["status"] != "completed")

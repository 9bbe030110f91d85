"""Bulk actions: retry, replay (or cancel) every event a filter matches, as a tracked, resumable job.

A request is checked whole before anything is stored (a bad action or filter: InvalidData naming it).
A dry run counts the events that match, and those the action applies to, with a sample of ids. A real
one stores a job (`bulk_jobs`) that a BulkRunner (one thread of each worker, embedded or not) claims
with a lease and applies page by page, newest event first: it writes the page it takes (its ids and
the cursor after them) into the job, acts on each event, then records the page's counts: done,
skipped (with why: an event in a status the action does not apply to) and failed. The job covers the
events accepted before it was made, so that what the action itself starts is not swept up again.
Each event is acted on through the API's own path (events.retry_event, runtime.cancel.cancel_event)
with the job's mark in the same write: its id in the run a retry or replay starts, "bulk job <id>" as
who cancelled. A holder that finishes an abandoned page sees the mark and counts the event as done
rather than act twice.
"""

from __future__ import annotations

import logging
import re
import threading
from datetime import datetime, timedelta
from typing import Any, Callable, Mapping

from machinery import events, search
from machinery.clock import EPOCH, naive_utc
from machinery.exceptions import Conflict, InvalidData, MachineryError, NotFound, StoreUnavailable
from machinery.store import Store, utcnow
from machinery.store.bulk_jobs import SAMPLES_KEPT
from machinery.store.event_filters import event_query
from machinery.store.store import COUNT_LIMIT

LOG = logging.getLogger(__name__)
ACTIONS = ("retry", "replay", "cancel")
APPLIES_TO = {"retry": ("failed",), "replay": ("completed", "failed"), "cancel": ("pending", "running", "waiting")}
FILTER_KEYS = ("workflow", "status", "created_after", "created_before", "error_kind", "failed_step", "attrs")
STATUSES = ("pending", "running", "waiting", "completed", "failed", "cancelled")
PAGE_SIZE = 100
SAMPLE_SIZE = 10
IDLE_S = 1.0


def canceller(job_id: str) -> str:
    """Who a bulk job's cancels are by, as the event's `cancelled.by` says: what marks them as its own."""
    return f"bulk job {job_id}"


def cancel_event(store: Store, event_id: str, job: Mapping[str, Any], observer=None) -> dict:
    """Cancel one event through the API's own cancel (runtime.cancel), by the job."""
    from machinery.runtime import cancel

    return cancel.cancel_event(store, event_id, by=canceller(job["job_id"]),
                               reason=f"bulk cancel made by {job.get('created_by') or 'anonymous'}", observer=observer)


# -- the request ---------------------------------------------------------------------------------------

def _date(value: Any, name: str) -> datetime:
    if isinstance(value, datetime):
        when = value
    else:
        try:
            when = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise InvalidData(f"filter.{name} must be an ISO 8601 date and time",
                              errors={f"filter.{name}": ["not an ISO 8601 date and time"]}) from None
    when = naive_utc(when)
    return when.replace(microsecond=when.microsecond // 1000 * 1000)


def _failed_step(value: Any) -> list:
    """The values error.step holds for a step: a tree's step id, or a chain's position (step-N or N)."""
    if type(value) is int and value >= 0:
        return [value, f"step-{value}"]
    if isinstance(value, str) and 0 < len(value) <= 100:
        position = re.fullmatch(r"step-(\d{1,4})", value)
        return [value, int(position.group(1))] if position else [value]
    raise InvalidData("filter.failed_step must be a step id (or a version 1 step's position)",
                      errors={"filter.failed_step": ["not a step id"]})


def check_request(store: Store, body: Any) -> dict:
    """A bulk request as a job would keep it: action, filter (normalised), from_step, dry_run."""
    if not isinstance(body, dict):
        raise InvalidData("the body must be a JSON object: {\"action\", \"filter\", \"dry_run\"}",
                          errors={"body": ["not an object"]})
    unknown = sorted(set(body) - {"action", "filter", "dry_run", "from_step"})
    if unknown:
        raise InvalidData(f"unknown key(s) in the body: {', '.join(unknown)}",
                          errors={key: ["unknown key"] for key in unknown})
    action = body.get("action")
    if action not in ACTIONS:
        raise InvalidData(f"action must be one of {', '.join(ACTIONS)}, not {action!r}",
                          errors={"action": [f"one of {', '.join(ACTIONS)}"]})
    dry_run = body.get("dry_run", False)
    if type(dry_run) is not bool:
        raise InvalidData("dry_run must be true or false", errors={"dry_run": ["not a boolean"]})
    from_step = body.get("from_step")
    if from_step is not None and (action != "replay" or type(from_step) not in (str, int)):
        raise InvalidData("from_step is a step id, and only for replay",
                          errors={"from_step": ["a step id, for replay only"]})
    given = body.get("filter", {})
    if not isinstance(given, dict):
        raise InvalidData("filter must be an object", errors={"filter": ["not an object"]})
    unknown = sorted(set(given) - set(FILTER_KEYS))
    if unknown:
        raise InvalidData(f"unknown filter key(s): {', '.join(unknown)}; a filter takes {', '.join(FILTER_KEYS)}",
                          errors={f"filter.{key}": ["unknown filter key"] for key in unknown})
    kept: dict[str, Any] = {}
    workflow = None
    if given.get("workflow") is not None:
        try:
            workflow = store.get_workflow(str(given["workflow"]))
        except NotFound:
            raise InvalidData(f"filter.workflow: no workflow {given['workflow']!r}",
                              errors={"filter.workflow": ["no such workflow"]}) from None
        kept.update(workflow_id=workflow["workflow_id"], workflow=workflow["name"])
    if given.get("status") is not None:
        if given["status"] not in STATUSES:
            raise InvalidData(f"filter.status must be one of {', '.join(STATUSES)}",
                              errors={"filter.status": [f"one of {', '.join(STATUSES)}"]})
        kept["status"] = given["status"]
    for name in ("created_after", "created_before"):
        if given.get(name) is not None:
            kept[name] = _date(given[name], name)
    if "created_after" in kept and "created_before" in kept and kept["created_after"] >= kept["created_before"]:
        raise InvalidData("filter.created_after must be before created_before",
                          errors={"filter.created_after": ["not before created_before"]})
    if given.get("error_kind") is not None:
        if not isinstance(given["error_kind"], str) or not 0 < len(given["error_kind"]) <= 100:
            raise InvalidData("filter.error_kind must be an error kind (timeout, http_status, contract, ...)",
                              errors={"filter.error_kind": ["not an error kind"]})
        kept["error_kind"] = given["error_kind"]
    if given.get("failed_step") is not None:
        kept["failed_step"] = _failed_step(given["failed_step"])
    attrs = given.get("attrs")
    if attrs is not None:
        if not isinstance(attrs, dict):
            raise InvalidData("filter.attrs must be an object: {\"<path>[__op]\": value}",
                              errors={"filter.attrs": ["not an object"]})
        try:
            parsed = search.parse_filters(attrs.items(), workflow, prefix="")
        except InvalidData as error:
            raise InvalidData(f"filter.attrs: {error.message}",
                              errors={f"filter.attrs.{key}": problems for key, problems in error.errors.items()}) \
                from None
        kept["attrs"] = [list(entry) for entry in parsed]
    return {"action": action, "filter": kept, "from_step": from_step, "dry_run": dry_run}


def query_of(kept: Mapping[str, Any], until: datetime | None = None, statuses: tuple | None = None) -> dict:
    """The store query of a normalised filter; `until`: only events accepted before it."""
    before = kept.get("created_before")
    if until is not None:
        before = min(before, until) if before else until
    query = event_query(workflow_id=kept.get("workflow_id"), status=kept.get("status"),
                        attrs=[tuple(entry) for entry in kept.get("attrs") or ()],
                        created_after=kept.get("created_after"), created_before=before,
                        error_kind=kept.get("error_kind"), failed_step=kept.get("failed_step"))
    if statuses is not None and "status" not in query:
        query["status"] = statuses[0] if len(statuses) == 1 else {"$in": list(statuses)}
    return query


def dry_run(store: Store, request: Mapping[str, Any]) -> dict:
    """How many events match, how many of them the action applies to, and a sample of their ids."""
    kept = request["filter"]
    query = query_of(kept)
    matched = store.bulk_jobs.count_events(query, COUNT_LIMIT)
    applies = APPLIES_TO[request["action"]]
    if kept.get("status") is not None:
        applicable = matched if kept["status"] in applies else 0
    else:
        # One count per status: each an equality the indexes answer, where an $in of them is not.
        applicable = min(sum(store.bulk_jobs.count_events(query_of({**kept, "status": status}), COUNT_LIMIT)
                             for status in applies), COUNT_LIMIT)
    sample, _ = store.bulk_jobs.event_page(query, None, SAMPLE_SIZE)
    return {"dry_run": True, "action": request["action"], "filter": _shown(kept), "matched": matched,
            "applicable": applicable, "matched_is_lower_bound": matched >= COUNT_LIMIT,
            "applies_to": list(applies), "sample": sample}


def _shown(kept: Mapping[str, Any]) -> dict:
    shown = dict(kept)
    if "failed_step" in shown:
        shown["failed_step"] = shown["failed_step"][0]
    return shown


def create_job(store: Store, request: Mapping[str, Any], created_by: str | None = None) -> dict:
    """Store a job for a checked request: the events matching now (accepted before it), all counted."""
    now = utcnow()
    kept = request["filter"]
    until = now + timedelta(milliseconds=1)
    matched = store.bulk_jobs.count_events(query_of(kept, until), COUNT_LIMIT)
    return store.bulk_jobs.insert({
        "action": request["action"], "filter": kept, "from_step": request.get("from_step"),
        "status": "pending", "created_at": now, "updated_at": now, "until": until, "created_by": created_by,
        "lease_owner": None, "lease_expires": EPOCH, "cursor": None, "in_flight": [], "more": True,
        "pages": 0, "claims": 0,
        "matched": matched, "matched_is_lower_bound": matched >= COUNT_LIMIT,
        "done": 0, "skipped": 0, "failed": 0, "unmatched": 0, "skipped_why": {},
        "samples": {"done": [], "skipped": [], "failed": []}, "finished_at": None,
    })


def shown_job(job: Mapping[str, Any]) -> dict:
    """A job as the API shows it: its progress, without its lease."""
    shown = {key: value for key, value in job.items()
             if key not in ("lease_owner", "lease_expires", "cursor", "in_flight", "more", "until")}
    shown["filter"] = _shown(job.get("filter") or {})
    handled = job.get("done", 0) + job.get("skipped", 0) + job.get("failed", 0)
    shown["handled"] = handled
    shown["skipped_why"] = [{"why": why.replace("\uff0e", "."), "count": count}
                            for why, count in (job.get("skipped_why") or {}).items()]
    shown["progress"] = 1.0 if job.get("status") == "completed" else \
        round(min(handled / job["matched"], 0.99), 3) if job.get("matched") else 0.0
    return shown


# -- applying a job ------------------------------------------------------------------------------------

def _marked(event: Mapping[str, Any], job_id: str) -> bool:
    """Whether this job acted on the event already: a run it started, or a cancel by it."""
    if (event.get("cancelled") or {}).get("by") == canceller(job_id):
        return True
    return any(run.get("bulk_job") == job_id for run in event.get("runs") or [])


def _replay_from(event: Mapping[str, Any], from_step: Any) -> Any:
    if from_step is not None:
        return from_step
    plan = event["plan"]
    if plan.get("version") == 2:
        return plan["tree"][0]["id"] if plan.get("tree") else None
    return 0


def apply_one(store: Store, job: Mapping[str, Any], event_id: str, observer=None) -> tuple[str, str | None]:
    """Act on one event: ("done", None), ("skipped", why), ("failed", why), or ("unmatched", None) for
    an event that left the filter's status between the read of its page and now (changed by another)."""
    job_id, action = job["job_id"], job["action"]
    note = {"bulk_job": job_id}
    for _ in range(3):
        try:
            event = store.get_event(event_id)
        except NotFound:
            return "skipped", "gone: the event was deleted (retention)"
        if _marked(event, job_id):
            return "done", None  # acted on by this job already (before a crash, or by another holder)
        status = event["status"]
        if job["filter"].get("status") not in (None, status):
            return "unmatched", None
        if status not in APPLIES_TO[action]:
            return "skipped", f"{status}: {action} applies to {' or '.join(APPLIES_TO[action])} events"
        try:
            if action == "retry":
                events.retry_event(store, event_id, note=note)
            elif action == "replay":
                events.retry_event(store, event_id, _replay_from(event, job.get("from_step")), note=note)
            else:
                cancel_event(store, event_id, job, observer)
            return "done", None
        except Conflict:
            continue  # changed meanwhile: look again
        except InvalidData as error:
            return "skipped", error.message[:300]
        except StoreUnavailable:
            raise
        except MachineryError as error:
            return "failed", error.message[:300]
    return "skipped", "changed while the job acted on it, three times"


def take_page(store: Store, job: Mapping[str, Any], owner: str, lease_s: float) -> dict | None:
    """Take a held job's next page: the ids of its events and the cursor after them, written into the
    job (`in_flight`) before any of them is acted on, so that whoever finishes the page knows which
    events it holds, whatever their status by then. None when the job is no longer this owner's."""
    until = naive_utc(job["until"]) if isinstance(job.get("until"), datetime) else None
    ids, after = store.bulk_jobs.event_page(query_of(job["filter"], until), job.get("cursor"), PAGE_SIZE)
    now = utcnow()
    taken = {"in_flight": ids, "cursor": after, "more": after is not None, "updated_at": now,
             "lease_expires": now + timedelta(seconds=lease_s)}
    if not store.bulk_jobs.record_page(job["job_id"], owner, job.get("cursor"), {"$set": taken}):
        return None
    return {**job, **taken}


def run_page(store: Store, job: Mapping[str, Any], owner: str, lease_s: float,
             queued: Callable[[str], None] | None = None, observer=None) -> dict | None:
    """Apply one page of a held job and record its counts: the page in flight when a holder stopped
    in the middle of it, else the next one. The job as it then is, or None when the job is no longer
    this owner's (another holder finishes the page: its counts stand)."""
    job_id = job["job_id"]
    if not job.get("in_flight"):
        job = take_page(store, job, owner, lease_s)
        if job is None:
            LOG.warning("bulk job %s: no longer held by %s", job_id, owner)
            return None
    counts = {"done": 0, "skipped": 0, "failed": 0, "unmatched": 0}
    why: dict[str, int] = {}
    samples: dict[str, list] = {"done": [], "skipped": [], "failed": []}
    kept = {name: len((job.get("samples") or {}).get(name) or []) for name in samples}
    for event_id in job["in_flight"]:
        outcome, reason = apply_one(store, job, event_id, observer)
        counts[outcome] += 1
        if outcome == "unmatched":
            continue
        if outcome == "skipped":
            why[reason] = why.get(reason, 0) + 1
        if kept[outcome] + len(samples[outcome]) < SAMPLES_KEPT:
            samples[outcome].append(event_id if outcome == "done" else {"event_id": event_id, "why": reason})
        if outcome == "done" and queued is not None:
            queued(event_id)
    now = utcnow()
    fields: dict[str, Any] = {"in_flight": [], "updated_at": now, "lease_expires": now + timedelta(seconds=lease_s)}
    if not job.get("more", True):
        fields.update(status="completed", finished_at=now, lease_owner=None, lease_expires=EPOCH)
    increments = {**counts, "pages": 1, **{f"skipped_why.{_key(reason)}": n for reason, n in why.items()}}
    update: dict[str, Any] = {"$set": fields, "$inc": increments}
    pushes = {f"samples.{name}": {"$each": items} for name, items in samples.items() if items}
    if pushes:
        update["$push"] = pushes
    if not store.bulk_jobs.record_page(job_id, owner, job.get("cursor"), update):
        LOG.warning("bulk job %s: no longer held by %s; its page is left to the holder", job_id, owner)
        return None
    return store.bulk_jobs.get(job_id)


def _key(reason: str) -> str:
    """A reason as a field name MongoDB takes: no dots, no leading $."""
    return reason.replace(".", "\uff0e").lstrip("$")[:200] or "unknown"


def run_job(store: Store, job: Mapping[str, Any], owner: str, lease_s: float,
            queued: Callable[[str], None] | None = None, stop: threading.Event | None = None,
            observer=None) -> dict | None:
    """Apply a claimed job page after page until it completes, the process stops, or it is lost."""
    current: Mapping[str, Any] | None = job
    while current is not None and current["status"] == "running":
        if stop is not None and stop.is_set():
            break
        current = run_page(store, current, owner, lease_s, queued, observer)
    if current is not None and current["status"] == "completed":
        LOG.info("bulk job %s (%s) completed: %d done, %d skipped, %d failed", current["job_id"],
                 current["action"], current["done"], current["skipped"], current["failed"])
    return current


class BulkRunner:
    """A thread that claims bulk jobs and applies them, in every process that runs events."""

    def __init__(self, store: Store, config: Mapping[str, Any], owner: str,
                 queued: Callable[[str], None] | None = None, observer=None):
        self.store, self.config, self.owner, self.queued = store, config, owner, queued
        self.observer = observer  # told of the events a bulk cancel ends (the metrics, the dashboard)
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self) -> BulkRunner:
        self._thread = threading.Thread(target=self._loop, name="machinery-bulk", daemon=True)
        self._thread.start()
        return self

    def wake(self) -> None:
        self._wake.set()

    def _loop(self) -> None:
        lease_s = self.config["LEASE_S"]
        idle = min(IDLE_S, max(self.config.get("POLL_S", IDLE_S), 0.01))
        while not self._stop.is_set():
            self._wake.clear()
            try:
                job = self.store.bulk_jobs.claim(self.owner, lease_s, utcnow())
                if job is not None:
                    run_job(self.store, job, self.owner, lease_s, self.queued, self._stop, self.observer)
                    continue
            except MachineryError as error:
                LOG.warning("bulk jobs: %s", error.message)
            except Exception:  # a bug must not end the thread
                LOG.exception("bulk jobs: unexpected error")
            self._wake.wait(idle)
            idle = min(idle * 2, IDLE_S)

    def stop(self, grace_s: float = 5.0) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=grace_s)

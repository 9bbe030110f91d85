"""Run a tree plan's event: walk the step tree from the top with the records already written, run what
has not finished, and park the event while something waits (see ``machinery.runtime``).

``run_tree(executor, event, owner)`` is what ``Executor.run`` calls for a plan with ``"version": 2``.
The kinds are in ``runtime.nodes``; this module keeps the state of one walk: the records, the first
failure, what waits, the progress summary and the writes of the event document.
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import datetime, timedelta
from typing import Any, Callable, Iterable, Mapping

from machinery import search
from machinery.language import dataflow
from machinery.language.expressions import compile_expression
from machinery.rollups import event_duration_ms
from machinery.runtime import cancel, payloads, threads, turns
from machinery.store import EPOCH, FINISHED, pending_webhook, utcnow

LOG = logging.getLogger(__name__)

OK, WAIT, FAIL, STOP = "ok", "waiting", "failed", "stopped"
FAR_FUTURE = datetime(9999, 1, 1)  # the deadline of a wait with none of its own (a child workflow)
PROGRESS_EVERY_S = 1.0
EXPRESSION_PLANS = 256  # plans whose compiled expressions are kept

_EXPRESSIONS: dict[str, dict[str, Any]] = {}
_CALLS_BOUND: dict[int, threading.BoundedSemaphore] = {}
_BOUND_LOCK = threading.Lock()


def expressions(plan: Mapping[str, Any]) -> Callable[[str], Any]:
    """The compiled form of a plan's expressions by their source, compiled once per plan fingerprint."""
    key = plan.get("fingerprint") or str(id(plan))
    table = _EXPRESSIONS.get(key)
    if table is None:
        if len(_EXPRESSIONS) >= EXPRESSION_PLANS:
            _EXPRESSIONS.clear()
        table = _EXPRESSIONS.setdefault(key, {})

    def compiled(source: str) -> Any:
        expression = table.get(source)
        if expression is None:
            expression = table[source] = compile_expression(source)
        return expression
    return compiled


def calls_bound(limit: int) -> threading.BoundedSemaphore:
    """The process's bound on calls in flight (MACHINERY_MAX_CALLS), one per limit."""
    with _BOUND_LOCK:
        bound = _CALLS_BOUND.get(limit)
        if bound is None:
            bound = _CALLS_BOUND[limit] = threading.BoundedSemaphore(limit)
        return bound


def run_lineage(event: Mapping[str, Any]) -> list[int]:
    """The runs whose records serve the event's current run: every run up to it."""
    return list(range(event.get("run", 0) + 1))


class Scope:
    """Where an instance sits: the path of the compound nodes around it, and the enclosing map items."""

    __slots__ = ("prefix", "items")

    def __init__(self, prefix: str = "", items: tuple = ()):
        self.prefix = prefix
        self.items = items

    def name(self, node_id: str) -> str:
        return f"{self.prefix}{node_id}"

    def inside(self, node_id: str) -> Scope:
        return Scope(f"{self.prefix}{node_id}/", self.items)

    def item(self, node_id: str, index: int) -> Scope:
        return Scope(f"{self.prefix}{node_id}[{index}]/", (*self.items, index))


class TreeRun:
    """One walk of a tree event held by `owner`."""

    def __init__(self, executor, event: dict, owner: str):
        self.executor = executor
        self.store = executor.store
        self.config = executor.config
        self.event = event
        self.owner = owner
        self.plan = event["plan"]
        self.event_id = event["event_id"]
        self.run = event.get("run", 0)
        self.expression = expressions(self.plan)
        self.calls = calls_bound(int(self.config.get("MAX_CALLS", 64)))
        self.lock = threading.Lock()
        self.stopped = threading.Event()
        self.error: dict | None = None
        self.lost = False
        self.cancelled = False
        self.deadlines: list[datetime] = []
        self.watched: list[dict] = []  # the waiting records, looked at once more after parking
        self.held: list[dict] = []  # the calls the services' flow control queued (machinery.runtime.flow)
        self.progress: dict[str, dict] = {}
        self.last_write = time.monotonic()
        self.values = payloads.Payloads(self.store, self.event_id)
        self.records = self._load()

    # -- records ------------------------------------------------------------------------

    def _load(self) -> dict[str, dict]:
        """The records that serve this run, by instance: completed ones of earlier runs (except what
        the run redoes), anything of this run. One query, none for a new event."""
        if self.run == 0 and self.event.get("claim_count", 0) <= 1 and not self.event.get("progress"):
            return {}
        redone = self.redone()
        found: dict[str, dict] = {}
        for record in self.store.step_runs_of(self.event_id, run_lineage(self.event)):
            if record["run"] == self.run:
                found[record["instance"]] = record
            elif record["status"] == "completed" and not redone(record["instance"], record["run"]):
                kept = found.get(record["instance"])
                if kept is None or kept["run"] < record["run"]:
                    found[record["instance"]] = record
        return found

    def redone(self) -> Callable[[str, int], bool]:
        """Whether a record of run `run` is set aside: a later retry or replay, up to this run, redoes
        its instance (so a replay's redo holds for the retries after it too)."""
        later = [(entry["run"], entry.get("redo") or []) for entry in self.event.get("runs") or []
                 if entry.get("redo") and entry.get("run", 0) <= self.run]

        def covers(prefix: str, instance: str) -> bool:
            return instance == prefix or (prefix[-1] in "/[" and instance.startswith(prefix))

        def redone(instance: str, run: int) -> bool:
            return any(number > run and any(covers(prefix, instance) for prefix in prefixes)
                       for number, prefixes in later)
        return redone

    def record(self, instance: str) -> dict | None:
        return self.records.get(instance)

    def new_record(self, node: Mapping[str, Any], instance: str, scope: Scope, **fields: Any) -> dict:
        return {"event_id": self.event_id, "run": self.run, "instance": instance, "node": node["id"],
                "kind": node["kind"], "items": list(scope.items), "item": scope.items[-1] if scope.items else None,
                "ack_date": self.event.get("ack_date"), **fields}

    def write(self, record: dict) -> dict:
        """Insert a record; one another holder wrote first for the instance is the one that counts."""
        stored, _ = self.store.insert_step_run(record)
        with self.lock:
            self.records[record["instance"]] = stored
        self.checkpoint()
        return stored

    def change(self, record: dict, fields: Mapping[str, Any]) -> dict:
        """Complete or fail a waiting record (only if it still waits)."""
        self.store.update_step_run(self.event_id, record["run"], record["instance"], {"$set": dict(fields)},
                                   expect={"status": "waiting"})
        updated = {**record, **fields}
        with self.lock:
            self.records[record["instance"]] = updated
        return updated

    # -- values -------------------------------------------------------------------------

    def search(self, source: str, context: Mapping[str, Any]) -> Any:
        """An expression over the context, its offloaded values read back (once per walk)."""
        return self.expression(source).search(self.values.resolve(context))

    # -- outcomes -----------------------------------------------------------------------

    def fail(self, error: Mapping[str, Any]) -> str:
        """The first final failure is the event's; what has not started does not start."""
        with self.lock:
            if self.error is None:
                self.error = dict(error)
        self.stopped.set()
        return FAIL

    def wait(self, deadline: datetime | None, record: Mapping[str, Any] | None = None) -> str:
        with self.lock:
            self.deadlines.append(deadline.replace(tzinfo=None) if deadline else FAR_FUTURE)  # all UTC
            if record is not None:
                self.watched.append(record)
        return WAIT

    def hold(self, note: Mapping[str, Any]) -> str:
        """A call its service's flow control held back: this path waits until the note's due time."""
        with self.lock:
            self.held.append(dict(note))
        return self.wait(note["until"])

    def count(self, node_id: str, **changes: int) -> None:
        """Move a node's progress counters (n, done, failed, running, waiting)."""
        with self.lock:
            entry = self.progress.setdefault(node_id, {"n": 0, "done": 0, "failed": 0, "running": 0, "waiting": 0})
            for key, value in changes.items():
                entry[key] = entry.get(key, 0) + value

    def taken(self, node_id: str, branch: str) -> None:
        """Count the branch an if or switch took (per instance: a map's items may take different ones)."""
        with self.lock:
            entry = self.progress.setdefault(node_id, {"n": 0, "done": 0, "failed": 0, "running": 0, "waiting": 0})
            entry["n"] += 1
            entry["done"] += 1
            taken = entry.setdefault("taken", {})
            taken[branch] = taken.get(branch, 0) + 1

    def may_start(self) -> bool:
        """Whether new work may start: False once the event is cancelled (read from the store, which
        every process writes its cancels to), and the walk stops; in-flight work finishes."""
        return not self.stopped.is_set() and not self._stop_if_cancelled()

    def _stop_if_cancelled(self) -> bool:
        """Whether the event is cancelled (read from the store); if so the walk stops."""
        if cancel.is_cancelled(self.store, self.event_id):
            self.cancelled = True
            self.stopped.set()
            return True
        return False

    # -- concurrency --------------------------------------------------------------------

    def together(self, work: Callable[[Any], str], arguments: Iterable[Any], limit: int) -> list[str]:
        """Run `work` on each argument, at most `limit` at once, on threads; the results in order. An
        argument not started when the walk stopped gives STOP."""
        arguments = list(arguments)

        def guarded(argument: Any) -> str:
            if self.stopped.is_set():
                return STOP
            try:
                return work(argument)
            except BaseException:
                self.stopped.set()
                raise
        if limit <= 1 or len(arguments) <= 1:
            return [guarded(argument) for argument in arguments]
        results = threads.each(lambda index: guarded(arguments[index]), len(arguments), limit)
        return [STOP if result is None else result for result in results]

    # -- the event document --------------------------------------------------------------

    def checkpoint(self) -> None:
        """Refresh the event's progress, at most once a second."""
        now = time.monotonic()
        with self.lock:
            if now - self.last_write < PROGRESS_EVERY_S:
                return
            self.last_write = now
            progress = _copy(self.progress)
        held = self.store.update_event(self.event_id, {"$set": {
            "progress": progress, "updated_at": utcnow(), "claims_without_progress": 0}}, owner=self.owner,
            expect=cancel.RUNNING)
        if not held and not self._stop_if_cancelled():
            LOG.warning("event %s: lease lost; another worker resumes it", self.event_id)
            self.lost = True
            self.stopped.set()

    def finish(self, status: str, context: dict, error: dict | None = None) -> dict:
        now = utcnow()
        context = self.values.offload(context, self.values.threshold, checked=False)  # what a map collected
        outputs = dataflow.workflow_outputs(self.plan, context) if status == "completed" else None
        fields: dict[str, Any] = {
            "status": status, "context": context, "outputs": outputs, "error": error, "progress": _copy(self.progress),
            "updated_at": now, "finished_at": now, "lease_owner": None, "lease_expires": EPOCH,
            "claims_without_progress": 0,
        }
        if self.event.get("callback_url"):
            fields["webhook"] = pending_webhook()
        if self.event.get("queued"):
            fields["queued"] = None
        search.fold(self.plan, fields)
        if not self.store.update_event(self.event_id, {"$set": fields}, owner=self.owner, expect=cancel.RUNNING):
            if self.settle_cancelled(context):
                return self.store.get_event(self.event_id)
            LOG.warning("event %s: lease lost before it could finish", self.event_id)
            return {**self.event, "status": "running"}
        event_ended(self.store, self.executor.observer, self.event, status, now)
        return {**self.event, **fields}

    def park(self, context: dict) -> dict:
        """Nothing runs and something waits: hand the event back until the earliest deadline, then look
        once more at what it waits for, so that an end that came meanwhile is not missed."""
        earliest = min(self.deadlines)
        context = self.values.offload(context, self.values.threshold, checked=False)
        fields = {"status": "waiting", "context": context, "progress": _copy(self.progress), "updated_at": utcnow(),
                  "lease_owner": None, "lease_expires": earliest, "claims_without_progress": 0}
        if self.held:  # pending when all it waits for is its turn at a service
            fields.update(queued={**self.held[0], "steps": len(self.held)},
                          status="pending" if len(self.held) == len(self.deadlines) else "waiting")
        elif self.event.get("queued"):
            fields["queued"] = None
        search.fold(self.plan, fields)
        if not self.store.update_event(self.event_id, {"$set": fields}, owner=self.owner, expect=cancel.RUNNING):
            if self.settle_cancelled(context):
                return self.store.get_event(self.event_id)
            LOG.warning("event %s: lease lost while parking it", self.event_id)
            return {**self.event, "status": "running"}
        if self.ready():
            wake(self.store, self.event_id)
            fields["lease_expires"] = EPOCH
        return {**self.event, **fields}

    def settle_cancelled(self, context: dict) -> bool:
        """The event was cancelled during this walk: record its progress and context, end what waits
        (what a call in flight parked after the cancel too) and let the event go. False when it was not
        cancelled (the lease was lost)."""
        update = {"$set": {"context": context, "progress": _copy(self.progress), "claims_without_progress": 0}}
        if not cancel.settle(self.store, self.event_id, self.owner, update):
            return False
        done = (self.store.get_event(self.event_id).get("cancelled") or {})
        cancel.revoke(self.store, self.event_id, done.get("by", cancel.ANONYMOUS), done.get("reason"))
        LOG.info("event %s: cancelled; what was in flight is recorded and nothing more runs", self.event_id)
        return True

    def ready(self) -> bool:
        """Whether one of the waits ended while the event was being parked."""
        if any(deadline <= utcnow() for deadline in self.deadlines):
            return True
        calls = {record["instance"] for record in self.watched if record["kind"] == "call"}
        if calls:
            for record in self.store.step_runs_of(self.event_id, [self.run]):
                if record["instance"] in calls and record["status"] != "waiting":
                    return True
        for record in self.watched:
            if record.get("child_event_id"):
                try:
                    child = self.store.get_event(record["child_event_id"])
                except Exception:  # a child removed by its TTL: the next claim fails the step
                    return True
                if child["status"] in FINISHED:
                    return True
        return False


def wake(store, event_id: str) -> bool:
    """Make a waiting event claimable now (a callback came, a child ended)."""
    return store.update_event(event_id, {"$set": {"lease_expires": EPOCH}}, expect={"status": "waiting"})


def event_ended(store, observer, event: Mapping[str, Any], status: str, now: datetime) -> None:
    """What follows an event's end, whoever ended it (its holder, or a cancel): its parent woken, its
    turn under its workflow's concurrency key given up, and the observer (metrics, dashboard) told."""
    wake_parent(store, event)
    turns.give_up(store, event)
    if observer is not None:
        observer.event_finished(event.get("workflow_name", ""), status, duration_ms=event_duration_ms(event, now))


def wake_parent(store, event: Mapping[str, Any]) -> None:
    """A child workflow's event ended: its parent, waiting for it, is claimable now."""
    parent = event.get("parent")
    if parent and parent.get("event_id"):
        try:
            wake(store, parent["event_id"])
        except Exception as error:  # the parent's next claim at its deadline still sees the end
            LOG.warning("event %s: could not wake its parent %s: %s", event.get("event_id"), parent["event_id"], error)


def run_tree(executor, event: dict, owner: str) -> dict:
    """Run a tree event held by `owner` until it completes, fails or parks."""
    from machinery.runtime import nodes

    walk = TreeRun(executor, event, owner)
    max_claims = executor.config.get("MAX_CLAIMS", 10)
    if event.get("claims_without_progress", 0) > max_claims:
        last = (event.get("last_error") or {}).get("message") or "none recorded"
        return walk.finish("failed", dict(event.get("context") or event.get("data") or {}), error={
            "kind": "stuck", "message": f"claimed {event['claims_without_progress'] - 1} times without a step "
                                        f"ending (MACHINERY_MAX_CLAIMS={max_claims}); last error: {last}"})
    context = base_context(event)
    result = nodes.block(walk, event["plan"]["tree"], context, Scope())
    if walk.lost:
        return {**event, "status": "running"}
    if walk.cancelled:
        if walk.settle_cancelled(context):
            return executor.store.get_event(walk.event_id)
        return {**event, "status": "running"}
    if result == FAIL or walk.error is not None:
        return walk.finish("failed", context, error=walk.error)
    if result == WAIT:
        return walk.park(context)
    return walk.finish("completed", context)


def base_context(event: Mapping[str, Any]) -> dict:
    """The context the walk starts from: the event's data, with the overrides of its retries and replays."""
    context = dict(event.get("data") or {})
    for entry in event.get("runs") or []:
        context.update(entry.get("overrides") or {})
    return context


def _copy(progress: Mapping[str, dict]) -> dict:
    return {key: {**value, **({"taken": dict(value["taken"])} if "taken" in value else {})}
            for key, value in progress.items()}


def parse_until(value: Any) -> datetime | None:
    """An ISO 8601 date-time as a naive UTC datetime (what the store keeps); None if it is not one."""
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is not None:
        when = (when - when.utcoffset()).replace(tzinfo=None)
    return when


def after_seconds(seconds: float) -> datetime:
    return utcnow() + timedelta(seconds=float(seconds))

"""Events as a user sees them: accept one, resume or replay it, and complete a step by callback."""

from __future__ import annotations

import itertools
import re
import time
from datetime import timedelta
from typing import Any, Callable, Iterable, Mapping
from urllib.parse import urlsplit

from bson import ObjectId

from machinery import guard, registry, search
from machinery.clock import naive_utc
from machinery.exceptions import Conflict, DataflowError, Gone, InvalidData, NotFound, ServiceCallError, TooLarge
from machinery.ids import random_hex
from machinery.language import dataflow, types
from machinery.runtime import cancel, payloads, replay, tree, turns
from machinery.runtime.executor import callback_outputs, close_waiting, hash_token, too_large_error
from machinery.store import EPOCH, Store, pending_webhook, utcnow
from machinery.store.limits import EVENT_LIMIT_BYTES, LIMIT, RecordSize, mib, new_event_bound
from machinery.store.store import CLAIMS_KEPT

ENVELOPE_KEYS = {"data", "callback_url", "idempotency_key"}
MAX_KEY_LENGTH = 200
EARLY_CALLBACK_WAIT_S = 2.0
RETRIABLE = ("failed", "cancelled")
REPLAYABLE = ("failed", "completed", "cancelled")


def parse_envelope(body: Any) -> tuple[Any, dict]:
    """Split a body into (data, options). It is an envelope when it is an object holding `data`
    (an object) and no keys but the envelope's; any other body is the data itself."""
    if isinstance(body, dict) and isinstance(body.get("data"), dict) and set(body) <= ENVELOPE_KEYS:
        return body["data"], {key: body.get(key) for key in ("callback_url", "idempotency_key")}
    return body, {}


def _check_url(value: Any, name: str) -> str:
    parts = urlsplit(value) if isinstance(value, str) else None
    if not parts or parts.scheme not in ("http", "https") or not parts.netloc or len(value) > 2000:
        raise InvalidData(f"{name} must be an http:// or https:// URL", errors={name: ["not an http(s) URL"]})
    return value


def _check_key(value: Any) -> str:
    if not isinstance(value, str) or not 0 < len(value) <= MAX_KEY_LENGTH:
        raise InvalidData(f"idempotency_key must be a string of 1 to {MAX_KEY_LENGTH} characters",
                          errors={"idempotency_key": ["not a string of 1 to 200 characters"]})
    return value


def held_by(owner: str | None, lease_s: float, now) -> dict:
    """An event's state fields when `owner` holds it to run at once, or when it waits for any worker."""
    if owner:
        return {"status": "running", "lease_owner": owner, "lease_expires": now + timedelta(seconds=lease_s)}
    return {"status": "pending", "lease_owner": None, "lease_expires": EPOCH}


def check_data(workflow: Mapping[str, Any], data: Any, offload_bytes: int | None = None) -> None:
    """Raise InvalidData naming each missing or mistyped input of the workflow (a value past
    `offload_bytes`, kept as a file, need only be JSON: payloads.check_storable)."""
    if not isinstance(data, dict):
        raise InvalidData(f"event data must be a JSON object, got {types.json_type(data)}",
                          errors={"data": [f"expected object, got {types.json_type(data)}"]})
    payloads.check_storable(data, "data", offload_bytes)
    problems = types.check(data, workflow["inputs"])
    if problems:
        listed = "; ".join(f"{name}: {problem}" for name, problem in problems.items())
        raise InvalidData(f"event data does not match the inputs of workflow {workflow['name']!r}: {listed}",
                          errors=problems)


def new_event(store: Store, workflow_ref: str, body: Any, *, idempotency_key: str | None = None,
              owner: str | None = None, lease_s: float = 30.0, callback_base: str | None = None,
              trace: Mapping[str, str] | None = None, allowed_hosts: Any = None,
              workflow: Mapping[str, Any] | None = None,
              parent: Mapping[str, Any] | None = None,
              schedule: Mapping[str, Any] | None = None) -> tuple[dict, bool]:
    """Check an event against its workflow and store it before anything runs.

    A `callback_url` whose host `allowed_hosts` (MACHINERY_ALLOWED_HOSTS) does not admit is refused.
    `workflow` may be given when the caller already read it by `workflow_ref`. `parent`: the
    {event_id, instance, run} of the tree event whose `workflow` step this event is. `schedule`: the
    {name, tick} of the schedule whose tick this event is.

    With an `owner` the event is stored running and held by that owner (a sync event, run at once);
    without, it is stored pending for any worker. Returns (event, created): an idempotency key
    already used for this workflow returns the first event and created=False.
    """
    if workflow is None:
        workflow = store.get_workflow(workflow_ref)
    data, options = parse_envelope(body)
    check_data(workflow, data, payloads.offload_bytes(store))
    key = options.get("idempotency_key")
    if key is not None and idempotency_key is not None and key != idempotency_key:
        raise InvalidData("the Idempotency-Key header and the body's idempotency_key differ",
                          errors={"idempotency_key": ["differs from the Idempotency-Key header"]})
    if key is None:
        key = idempotency_key
    if key is not None:
        _check_key(key)
    callback_url = options.get("callback_url")
    if callback_url is not None:
        _check_url(callback_url, "callback_url")
        guard.check_url(callback_url, allowed_hosts, "callback_url")
    try:
        plan = registry.event_plan(store, workflow)
    except DataflowError as error:
        raise Conflict(f"workflow {workflow['name']!r} no longer checks against the registered services: "
                       f"{error.message}", errors=error.errors) from None
    held = cancel.held_fields(workflow)  # a paused workflow's event waits, even a sync one
    if held:
        owner = None
    now = utcnow()
    oid = ObjectId()
    data = payloads.Payloads(store, str(oid)).offload(data, payloads.offload_bytes(store))
    event = {
        "_id": oid, "workflow_id": workflow["workflow_id"], "workflow_name": workflow["name"],
        "workflow_version": workflow.get("version", 1), "plan": plan,
        **held_by(owner, lease_s, now), "ack_date": now, "updated_at": now, "finished_at": None,
        "data": data, "context": dict(data), "steps": [], "next_step": 0, "run": 0, "runs": [],
        "outputs": None, "error": None, "callback_url": callback_url, "callback_base": callback_base,
        "trace": {"trace_id": random_hex(128), **(trace or {})},
        "claims": [{"owner": owner, "at": now}] if owner else [],
        "claim_count": 1 if owner else 0, "claims_without_progress": 1 if owner else 0,
    }
    if plan.get("version") == 2:
        event["progress"] = {}
    if parent is not None:
        event["parent"] = dict(parent)
    if schedule is not None:
        event["schedule"] = dict(schedule)
    if key is not None:
        event["idempotency_key"] = key
    event.update(held)
    event.update(turns.event_fields(workflow, data))  # its turn, when the workflow sets `concurrency`
    search.fold(plan, event)
    event["size_bound"] = new_event_bound(event)
    stored, created = store.insert_event(event)
    if created and held:
        cancel.recheck_held(store, stored)
    return stored, created


def context_before(event: Mapping[str, Any], index: int, completed: Mapping[tuple, Mapping] | None = None) -> dict:
    """The context as it stood before step `index`, along the event's latest lineage of runs.

    A run after the first starts from the context before its `from_step` along the run before it,
    with its `overrides` (events stored before that held it whole, as `base_context`). `completed`:
    the event's completed step records by (run, step), when the caller has them (completed_records).
    """
    if completed is None:
        completed = completed_records(event)
    plan_steps = event["plan"]["steps"]
    runs = {entry["run"]: entry for entry in event.get("runs") or []}
    run = event.get("run", 0)
    while run > 0 and runs.get(run, {}).get("from_step", 0) > index:
        run -= 1
    start = runs[run]["from_step"] if run > 0 else 0
    context = _run_base(event, runs, run, completed)
    for step in range(start, index):
        record = completed.get((run, step))
        if record is None:
            # This run never got that far: an earlier run holds the step.
            return context_before({**event, "run": run - 1}, index, completed) if run > 0 else context
        dataflow.apply_outputs(plan_steps[step], record.get("outputs") or {}, context)
    return context


def _run_base(event: Mapping[str, Any], runs: Mapping[int, Mapping], run: int, completed: Mapping) -> dict:
    """The context run `run` started from."""
    if run == 0:
        return dict(event["data"])
    entry = runs[run]
    if "base_context" in entry:
        return dict(entry["base_context"])
    base = context_before({**event, "run": run - 1}, entry["from_step"], completed)
    base.update(entry.get("overrides") or {})
    return base


def completed_records(event: Mapping[str, Any]) -> dict[tuple, Mapping]:
    """The event's completed step records by (run, step), the latest of each."""
    return {(record.get("run", 0), record["step"]): record for record in event.get("steps") or []
            if record.get("status") == "completed"}


def _cancel_as_now(event: Mapping[str, Any]) -> Mapping[str, Any]:
    """A cancel's `in_flight` stays true in the store until the holder records what it was doing; a
    holder that died first never does, and its lease's expiry is what says nothing is in flight any more
    (no worker takes a cancelled event, so no one writes it)."""
    cancelled = event.get("cancelled")
    if not (isinstance(cancelled, dict) and cancelled.get("in_flight")):
        return event
    lease = event.get("lease_expires")
    if lease is not None and naive_utc(lease) > utcnow():
        return event
    return {**event, "cancelled": {**cancelled, "in_flight": False}}


def for_display(event: Mapping[str, Any], store: Store | None = None,
                records: Iterable[Mapping[str, Any]] | None = None) -> dict:
    """An event as the API, the UI and the completion webhook show it. Step records store no copy of
    the inputs sent (they are the plan's inputs read from the context before the step): each is put
    back here, with the context if it was dropped and the claim count. Records that hold their inputs
    (stored before) are shown as they are; a record whose inputs cannot be rebuilt is shown without.
    `records`: a tree event's step records of its latest run lineage, all of them, when the caller has
    read them already (the event page): its `steps` are taken from them instead of read again."""
    event = _cancel_as_now(event)
    if (event.get("plan") or {}).get("version") == 2:
        return _tree_display(event, store, records)
    steps = event.get("steps") or []
    waiting = event.get("waiting")
    shown = dict(event)
    if "claim_count" not in shown and "claims" in shown:
        shown["claim_count"] = len(shown["claims"] or [])
    missing = [record for record in steps if "inputs" not in record]
    if waiting and "inputs" not in waiting:
        missing.append(waiting)
    if not missing and "context" in event:
        return shown
    try:
        completed = completed_records(event)
        plan_steps = event["plan"]["steps"]
        found: dict[tuple, dict] = {}

        def inputs(record):
            key = (record.get("run", 0), record["step"])
            if key not in found:
                context = context_before({**event, "run": key[0]}, key[1], completed)
                found[key] = dataflow.step_inputs(plan_steps[key[1]], context)
            return found[key]

        shown["steps"] = [record if "inputs" in record else {**record, "inputs": inputs(record)} for record in steps]
        if waiting and "inputs" not in waiting:
            shown["waiting"] = {**waiting, "inputs": inputs(waiting)}
        if "context" not in event:
            shown["context"] = context_before(event, event.get("next_step", 0), completed)
    except (KeyError, IndexError, TypeError, AttributeError):
        pass  # a record this version cannot read (a plan in another shape): shown as stored
    return shown


DISPLAYED_RECORDS = 500


def _tree_display(event: Mapping[str, Any], store: Store | None,
                  records: Iterable[Mapping[str, Any]] | None = None) -> dict:
    """A tree event as shown: its progress, and as `steps` the records of its latest run lineage outside
    any map item (the first DISPLAYED_RECORDS; GET /events/<id>/steps pages them all), when the
    store or those records are given."""
    shown = dict(event)
    shown.setdefault("progress", {})
    if "claim_count" not in shown and "claims" in shown:
        shown["claim_count"] = len(shown["claims"] or [])
    if records is not None:
        top = itertools.islice((record for record in records if record.get("item") is None), DISPLAYED_RECORDS)
    elif store is not None and event.get("event_id"):
        top = store.step_runs_of(event["event_id"], tree.run_lineage(event), top_only=True, limit=DISPLAYED_RECORDS)
    else:
        return shown
    latest: dict[str, dict] = {}
    for record in top:
        latest[record["instance"]] = record
    shown["steps"] = list(latest.values())
    return shown


def context_types(plan: Mapping[str, Any], index: int) -> dict[str, Any]:
    """The context keys a plan may hold before step `index`, with their types (normal form)."""
    available = {field["name"]: types.parse_field(field)["type"] for field in plan["inputs"]}
    for step in plan["steps"][:index]:
        outputs = {field["name"]: field for field in step["service"]["outputs"]}
        for name, key in step["outputs"].items():
            available[key] = types.parse_field(outputs[name])["type"]
    return available


def retry_event(store: Store, event_id: str, from_step: int | str | None = None,
                context: Mapping[str, Any] | None = None, owner: str | None = None,
                lease_s: float = 30.0, item: int | None = None, note: Mapping[str, Any] | None = None) -> dict:
    """Resume a failed event from its failed step, or replay it from an earlier step with edited values.

    The event is set pending for a worker, or running and held by `owner` for the caller to run at
    once; it stays pinned to the plan it started with, and every earlier step record stays. A version
    1 step may be named by its id (``step-2``); a tree event's by its step id, and a map's by `item`.
    `note`: fields kept in the new run's entry of `runs`, written with it (what a bulk job marks).
    """
    event = store.get_event(event_id)
    if event["plan"].get("version") == 2:
        return _retry_tree(store, event, from_step, item, context, owner, lease_s, note)
    if item is not None:
        raise InvalidData("item names an item of a map step: this event's workflow has none",
                          errors={"item": ["this event's plan has no map"]})
    if isinstance(from_step, str):
        position = re.fullmatch(r"step-(\d{1,4})", from_step)
        if position is None:
            raise InvalidData(f"from_step {from_step!r} is not a step of this event: its steps are step-0 to "
                              f"step-{len(event['plan']['steps']) - 1}, or their positions",
                              errors={"from_step": [f"not a step id: {from_step!r}"]})
        from_step = int(position.group(1))
    status, steps = event["status"], event["plan"]["steps"]
    stopped = status in RETRIABLE  # a cancelled event is retried as a failed one: from where it stopped
    if from_step is None and not context:
        if not stopped:
            raise Conflict(f"event {event_id} is {status}; only a failed event can be retried, or a cancelled one "
                           "(send from_step to replay a finished event)")
        from_step = event["next_step"]
    elif status not in REPLAYABLE:
        raise Conflict(f"event {event_id} is {status}; only a finished event can be replayed")
    if from_step is None:
        from_step = event["next_step"] if stopped else 0
    furthest = event["next_step"] if stopped else len(steps) - 1
    if not 0 <= from_step <= furthest:
        raise InvalidData(f"from_step must be between 0 and {furthest} for this event",
                          errors={"from_step": [f"not between 0 and {furthest}"]})
    base = context_before(event, from_step)
    overrides = dict(context or {})
    payloads.check_storable(overrides, "context", payloads.offload_bytes(store))
    if overrides:
        available = context_types(event["plan"], from_step)
        check_overrides(overrides, available, f"not a context key before step {from_step}; available: "
                        f"{', '.join(sorted(available))}", f"the plan before step {from_step}")
        overrides = _offloaded(store, event_id, overrides)
        base.update(overrides)
    run = event.get("run", 0) + 1
    now = utcnow()
    # The run records the values changed only: context_before rebuilds the rest from the run before.
    entry = {"run": run, "from_step": from_step, "at": now, "overrides": overrides, "previous_status": status,
             **_cancel_of(event), **(note or {})}
    fields = {**held_by(owner, lease_s, now), "next_step": from_step, "context": base, "run": run, "cancelled": None,
              "outputs": None, "error": None, "finished_at": None, "updated_at": now, "webhook": None,
              "claims_without_progress": 1 if owner else 0}
    update: dict[str, Any] = {"$set": search.fold(event["plan"], fields), "$push": {"runs": entry}}
    size = RecordSize(event).after(update, base)
    if size > EVENT_LIMIT_BYTES:
        raise TooLarge(f"event {event_id} cannot be replayed: its record would take about {mib(size)}, past "
                       f"{LIMIT}", errors={"context": [f"the record would take about {mib(size)}"]})
    if owner:
        update["$push"]["claims"] = {"$each": [{"owner": owner, "at": now}], "$slice": -CLAIMS_KEPT}
        update["$inc"] = {"claim_count": 1}
    updated = store.update_event(event_id, update, expect={"status": status, "run": event.get("run", 0)})
    if not updated:
        raise Conflict(f"event {event_id} changed while it was being retried; try again")
    return store.get_event(event_id)


def _cancel_of(event: Mapping[str, Any]) -> dict:
    """What a run entry keeps of the cancel it follows (the event's own `cancelled` is cleared)."""
    return {"cancelled": event["cancelled"]} if event.get("cancelled") else {}


def _offloaded(store: Store, event_id: str, overrides: Mapping[str, Any]) -> dict:
    """Edited values of a replay, the large ones stored as files (checked against their types before)."""
    return payloads.Payloads(store, event_id).offload(overrides, payloads.offload_bytes(store)) or {}


def check_overrides(overrides: Mapping[str, Any], available: Mapping[str, Any], unknown: str, against: str) -> None:
    """Raise InvalidData naming each edited value whose key is not `available` (saying `unknown`) or
    whose value does not fit the key's type."""
    problems: dict[str, str] = {}
    for key, value in overrides.items():
        if key not in available:
            problems[key] = unknown
        else:
            problems.update(types.check_value(value, available[key], key))
    if problems:
        listed = "; ".join(f"{key}: {problem}" for key, problem in problems.items())
        raise InvalidData(f"context does not match {against}: {listed}", errors=problems)


def _retry_tree(store: Store, event: Mapping[str, Any], from_step: Any, item: int | None,
                context: Mapping[str, Any] | None, owner: str | None, lease_s: float,
                note: Mapping[str, Any] | None = None) -> dict:
    """A new run of a tree event: a retry reruns what did not complete (completed records serve it);
    a replay also redoes `from_step` (or one map `item`) and what follows it. Edited values replace
    the workflow's inputs the run starts from, checked against their declared types."""
    event_id, status = event["event_id"], event["status"]
    if from_step is None and item is None and not context:
        if status not in RETRIABLE:
            raise Conflict(f"event {event_id} is {status}; only a failed event can be retried, or a cancelled one "
                           "(send from_step to replay a finished event)")
    elif status not in REPLAYABLE:
        raise Conflict(f"event {event_id} is {status}; only a finished event can be replayed")
    if item is not None and from_step is None:
        raise InvalidData("item needs from_step: the map whose item to replay",
                          errors={"from_step": ["required with item"]})
    if from_step is not None and not isinstance(from_step, str):
        raise InvalidData("from_step of a tree event is a step id", errors={"from_step": ["not a step id"]})
    redo = replay.redo_prefixes(event["plan"], from_step, item) if from_step is not None else []
    overrides = dict(context or {})
    payloads.check_storable(overrides, "context", payloads.offload_bytes(store))
    inputs = {field["name"]: types.parse_field(field)["type"] for field in event["plan"]["inputs"]}
    listed = ", ".join(sorted(inputs)) or "none"
    check_overrides(overrides, inputs, f"not an input of the workflow; its inputs: {listed}", "the workflow's inputs")
    overrides = _offloaded(store, event_id, overrides)
    run = event.get("run", 0) + 1
    now = utcnow()
    entry = {"run": run, "from_step": from_step, "item": item, "overrides": overrides, "redo": redo, "at": now,
             "previous_status": status, **_cancel_of(event), **(note or {})}
    fields = {**held_by(owner, lease_s, now), "run": run, "cancelled": None,
              "context": {**(event.get("context") or {}), **overrides},
              "outputs": None, "error": None, "finished_at": None, "updated_at": now, "webhook": None,
              "claims_without_progress": 1 if owner else 0}
    update: dict[str, Any] = {"$set": search.fold(event["plan"], fields), "$push": {"runs": entry}}
    if owner:
        update["$push"]["claims"] = {"$each": [{"owner": owner, "at": now}], "$slice": -CLAIMS_KEPT}
        update["$inc"] = {"claim_count": 1}
    if not store.update_event(event_id, update, expect={"status": status, "run": event.get("run", 0)}):
        raise Conflict(f"event {event_id} changed while it was being retried; try again")
    return store.get_event(event_id)


def complete_callback(store: Store, token: str, body: Any, headers: Mapping[str, str] | None = None,
                      secret: Callable[[str], str] | None = None) -> dict:
    """Complete a waiting step with the outputs its service POSTed to the callback URL, read through
    the service's `from` expressions as its reply would be (`executor.callback_outputs`); `headers`
    are the callback request's, `secret` reads a secret's value (to mask it in what is kept).

    Unknown token: NotFound. Spent or expired token: Gone. Outputs that do not match the
    declared outputs: InvalidData, and the step keeps waiting for a correct callback.
    """
    token_hash = hash_token(token)
    event, spent = store.find_by_callback(token_hash)
    if spent:
        raise Gone("this callback was already used")
    if event is None:
        record = _tree_record(store, token, token_hash)
        if record is not None:
            return _complete_tree_callback(store, record, token_hash, body, headers, secret)
        event = _await_parking(store, token, token_hash)
    waiting = event["waiting"]
    if waiting["expires"].replace(tzinfo=None) < utcnow():
        raise Gone("the deadline of this callback has passed")
    step = event["plan"]["steps"][waiting["step"]]
    outputs = payloads.Payloads(store, event["event_id"]).outputs(
        _callback_outputs(step["service"], body, headers, secret))
    record = close_waiting(waiting, status="completed", outputs=outputs)
    now = record["finished_at"]
    changes: dict[str, Any] = {}
    dataflow.apply_outputs(step, outputs, changes)
    context = {**event["context"], **changes}
    index = waiting["step"] + 1
    fields: dict[str, Any] = {"context": context, "next_step": index, "updated_at": now,
                              "lease_owner": None, "lease_expires": EPOCH, "claims_without_progress": 0}
    if index == len(event["plan"]["steps"]):
        fields.update(status="completed", outputs=dataflow.workflow_outputs(event["plan"], context),
                      finished_at=now)
        if event.get("callback_url"):
            fields["webhook"] = pending_webhook()
    else:
        fields["status"] = "pending"
    update = {"$set": search.fold(event["plan"], fields), "$unset": {"waiting": ""},
              "$push": {"steps": record, "spent_tokens": token_hash}}
    expect = {"status": "waiting", "waiting.token_hash": token_hash}
    size = RecordSize(event).after(update, changes)
    try:
        if size > EVENT_LIMIT_BYTES:
            raise TooLarge(f"about {mib(size)}")
        updated = store.update_event(event["event_id"], update, expect=expect)
    except TooLarge as refused:
        _fail_callback_too_large(store, event, record, expect, token_hash, size, refused)
        raise TooLarge(f"the callback's outputs do not fit in the event's record: {LIMIT}; the event failed "
                       "(kind too_large) and this callback is spent") from None
    if not updated:
        raise Gone("this callback was already used, or its deadline passed")
    if fields["status"] == "completed":
        tree.wake_parent(store, event)
    return store.get_event(event["event_id"])


def _tree_record(store: Store, token: str, token_hash: str) -> dict | None:
    """The step record of a tree event holding this callback token; None for a version 1 event. A
    callback may beat the write of its record: it waits briefly while the event it names runs."""
    record = store.find_step_run_by_token(token_hash)
    if record is not None:
        return record
    not_a_tree = object()

    def look(event):
        if (event.get("plan") or {}).get("version") != 2:
            return not_a_tree
        return store.find_step_run_by_token(token_hash)
    found = _while_it_runs(store, token, look)
    if found is not_a_tree:
        return None
    if found is None:
        raise NotFound("unknown callback token")
    return found


def _callback_outputs(service: Mapping[str, Any], body: Any, headers: Mapping[str, str] | None,
                      secret: Callable[[str], str] | None) -> dict:
    """The outputs a callback brings, or InvalidData naming each one missing or mistyped."""
    outputs, problems = callback_outputs(service, body, headers or {}, secret or _no_secret)
    if problems:
        listed = "; ".join(f"{name}: {problem}" for name, problem in problems.items())
        raise InvalidData(f"callback does not match the declared outputs of {service['name']!r}: {listed}",
                          errors=problems)
    return outputs


def _no_secret(name: str) -> str:
    raise ServiceCallError(f"secret {name!r} is not readable here", kind="secret", retryable=False)


def _complete_tree_callback(store: Store, record: Mapping[str, Any], token_hash: str, body: Any,
                            headers: Mapping[str, str] | None = None,
                            secret: Callable[[str], str] | None = None) -> dict:
    """Complete a tree event's waiting call record with the outputs its service POSTed, then wake the event."""
    if record["status"] == "cancelled":
        raise Gone("this callback was revoked: its event was cancelled")
    if record["status"] != "waiting":
        raise Gone("this callback was already used, or its deadline passed")
    if record["expires"].replace(tzinfo=None) < utcnow():
        raise Gone("the deadline of this callback has passed")
    event = store.get_event(record["event_id"])
    service = event["plan"]["services"][record["service"]]
    outputs = payloads.Payloads(store, record["event_id"]).outputs(
        _callback_outputs(service, body, headers, secret))
    closed = close_waiting(record, status="completed", outputs=outputs)
    fields = {key: closed[key] for key in ("status", "outputs", "finished_at", "duration_ms") if key in closed}
    try:
        updated = store.update_step_run(record["event_id"], record["run"], record["instance"], {"$set": fields},
                                        expect={"status": "waiting", "token_hash": token_hash})
    except TooLarge:
        raise TooLarge(f"the callback's outputs do not fit in a step record: {LIMIT}") from None
    if not updated:
        raise Gone("this callback was already used, or its deadline passed")
    tree.wake(store, record["event_id"])
    return store.get_event(record["event_id"])


def _fail_callback_too_large(store: Store, event: Mapping[str, Any], record: Mapping[str, Any],
                             expect: Mapping[str, Any], token_hash: str, size: int, refused: TooLarge) -> None:
    """Fail an event whose waiting step's callback brought outputs its record has no room for."""
    index = record["step"]
    error = too_large_error(index, record.get("service"), grown=size if size > EVENT_LIMIT_BYTES else None,
                            refused=None if size > EVENT_LIMIT_BYTES else refused)
    failed = {key: value for key, value in record.items() if key != "outputs"}
    failed.update(status="failed", error={"kind": "too_large", "message": error["message"]}, outputs_dropped=True)
    now = utcnow()
    fields = {"status": "failed", "error": error, "next_step": index, "updated_at": now, "finished_at": now,
              "lease_owner": None, "lease_expires": EPOCH, "claims_without_progress": 0,
              "size_bound": size}  # over what it is, without the outputs: measured again at the next write
    if event.get("callback_url"):
        fields["webhook"] = pending_webhook()
    try:
        store.update_event(event["event_id"], {"$set": fields, "$unset": {"waiting": ""},
                                               "$push": {"steps": failed, "spent_tokens": token_hash}},
                           expect=expect)
    except TooLarge:
        store.fail_too_large(event["event_id"], error, expect=expect)


def _await_parking(store: Store, token: str, token_hash: str) -> dict:
    """A callback may beat the write that parks its step: wait briefly while the event it names runs."""
    event = _while_it_runs(store, token, lambda event: event if (event.get("waiting") or {}).get("token_hash")
                           == token_hash else None)
    if event is not None:
        return event
    event, spent = store.find_by_callback(token_hash)
    if spent:
        raise Gone("this callback was already used")
    if event is None:
        raise NotFound("unknown callback token")
    return event


def _while_it_runs(store: Store, token: str, look: Any) -> Any:
    """Read the event a callback token names, for up to EARLY_CALLBACK_WAIT_S while it runs, until
    `look(event)` finds something (returned); None once it no longer runs or the wait is over."""
    event_id = token.split(".", 1)[0]
    deadline = time.monotonic() + EARLY_CALLBACK_WAIT_S
    while True:
        try:
            event = store.get_event(event_id)
        except NotFound:
            raise NotFound("unknown callback token") from None
        found = look(event)
        if found is not None:
            return found
        if event["status"] != "running" or time.monotonic() > deadline:
            return None
        time.sleep(0.02)

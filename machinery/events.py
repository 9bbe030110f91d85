"""Events as a user sees them: accept one, resume or replay it, and complete a step by callback."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any, Mapping
from urllib.parse import urlsplit

from machinery import guard, registry
from machinery.exceptions import Conflict, DataflowError, Gone, InvalidData, NotFound
from machinery.ids import random_hex
from machinery.language import dataflow, types
from machinery.runtime.executor import check_outputs, close_waiting, hash_token
from machinery.store import EPOCH, Store, pending_webhook, utcnow

ENVELOPE_KEYS = {"data", "callback_url", "idempotency_key"}
MAX_KEY_LENGTH = 200
EARLY_CALLBACK_WAIT_S = 2.0


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


def check_data(workflow: Mapping[str, Any], data: Any) -> None:
    """Raise InvalidData naming each missing or mistyped input of the workflow."""
    if not isinstance(data, dict):
        raise InvalidData(f"event data must be a JSON object, got {types.json_type(data)}",
                          errors={"data": [f"expected object, got {types.json_type(data)}"]})
    guard.check_storable(data, "data")
    problems = types.check(data, workflow["inputs"])
    if problems:
        listed = "; ".join(f"{name}: {problem}" for name, problem in problems.items())
        raise InvalidData(f"event data does not match the inputs of workflow {workflow['name']!r}: {listed}",
                          errors=problems)


def new_event(store: Store, workflow_ref: str, body: Any, *, idempotency_key: str | None = None,
              owner: str | None = None, lease_s: float = 30.0, callback_base: str | None = None,
              trace: Mapping[str, str] | None = None, allowed_hosts: Any = None,
              workflow: Mapping[str, Any] | None = None) -> tuple[dict, bool]:
    """Check an event against its workflow and store it before anything runs.

    A `callback_url` whose host `allowed_hosts` (MACHINERY_ALLOWED_HOSTS) does not admit is refused.
    `workflow` may be given when the caller already read it by `workflow_ref`.

    With an `owner` the event is stored running and held by that owner (a sync event, run at once);
    without, it is stored pending for any worker. Returns (event, created): an idempotency key
    already used for this workflow returns the first event and created=False.
    """
    if workflow is None:
        workflow = store.get_workflow(workflow_ref)
    data, options = parse_envelope(body)
    check_data(workflow, data)
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
    now = utcnow()
    event = {
        "workflow_id": workflow["workflow_id"], "workflow_name": workflow["name"],
        "workflow_version": workflow.get("version", 1), "plan": plan,
        **held_by(owner, lease_s, now), "ack_date": now, "updated_at": now, "finished_at": None,
        "data": data, "context": dict(data), "steps": [], "next_step": 0, "run": 0, "runs": [],
        "outputs": None, "error": None, "callback_url": callback_url, "callback_base": callback_base,
        "trace": {"trace_id": random_hex(128), **(trace or {})},
        "claims": [{"owner": owner, "at": now}] if owner else [],
    }
    if key is not None:
        event["idempotency_key"] = key
    return store.insert_event(event)


def context_before(event: Mapping[str, Any], index: int) -> dict:
    """The context as it stood before step `index`, along the event's latest lineage of runs."""
    plan_steps = event["plan"]["steps"]
    runs = {entry["run"]: entry for entry in event.get("runs") or []}
    run = event.get("run", 0)
    while run > 0 and runs.get(run, {}).get("from_step", 0) > index:
        run -= 1
    start = runs[run]["from_step"] if run > 0 else 0
    context = dict(runs[run]["base_context"]) if run > 0 else dict(event["data"])
    for step in range(start, index):
        record = next((r for r in reversed(event.get("steps") or [])
                       if r["step"] == step and r.get("run", 0) == run and r["status"] == "completed"), None)
        if record is None:
            # This run never got that far: an earlier run holds the step.
            return context_before({**event, "run": run - 1}, index) if run > 0 else context
        dataflow.apply_outputs(plan_steps[step], record.get("outputs") or {}, context)
    return context


def context_types(plan: Mapping[str, Any], index: int) -> dict[str, Any]:
    """The context keys a plan may hold before step `index`, with their types (normal form)."""
    available = {field["name"]: types.parse_field(field)["type"] for field in plan["inputs"]}
    for step in plan["steps"][:index]:
        outputs = {field["name"]: field for field in step["service"]["outputs"]}
        for name, key in step["outputs"].items():
            available[key] = types.parse_field(outputs[name])["type"]
    return available


def retry_event(store: Store, event_id: str, from_step: int | None = None,
                context: Mapping[str, Any] | None = None, owner: str | None = None,
                lease_s: float = 30.0) -> dict:
    """Resume a failed event from its failed step, or replay it from an earlier step with edited values.

    The event is set pending for a worker, or running and held by `owner` for the caller to run at
    once; it stays pinned to the plan it started with, and every earlier step record stays.
    """
    event = store.get_event(event_id)
    status, steps = event["status"], event["plan"]["steps"]
    if from_step is None and not context:
        if status != "failed":
            raise Conflict(f"event {event_id} is {status}; only a failed event can be retried "
                           "(send from_step to replay a finished event)")
        from_step = event["next_step"]
    elif status not in ("failed", "completed"):
        raise Conflict(f"event {event_id} is {status}; only a finished event can be replayed")
    if from_step is None:
        from_step = event["next_step"] if status == "failed" else 0
    furthest = event["next_step"] if status == "failed" else len(steps) - 1
    if not 0 <= from_step <= furthest:
        raise InvalidData(f"from_step must be between 0 and {furthest} for this event",
                          errors={"from_step": [f"not between 0 and {furthest}"]})
    base = context_before(event, from_step)
    overrides = dict(context or {})
    guard.check_storable(overrides, "context")
    if overrides:
        available = context_types(event["plan"], from_step)
        problems = {}
        for key, value in overrides.items():
            if key not in available:
                problems[key] = f"not a context key before step {from_step}; available: {', '.join(sorted(available))}"
            else:
                problems.update(types.check_value(value, available[key], key))
        if problems:
            listed = "; ".join(f"{key}: {problem}" for key, problem in problems.items())
            raise InvalidData(f"context does not match the plan before step {from_step}: {listed}", errors=problems)
        base.update(overrides)
    run = event.get("run", 0) + 1
    now = utcnow()
    push: dict[str, Any] = {"runs": {"run": run, "from_step": from_step, "at": now, "base_context": base,
                                     "overrides": overrides, "previous_status": status}}
    if owner:
        push["claims"] = {"owner": owner, "at": now}
    updated = store.update_event(event_id, {
        "$set": {**held_by(owner, lease_s, now), "next_step": from_step, "context": base, "run": run,
                 "outputs": None, "error": None, "finished_at": None, "updated_at": now, "webhook": None},
        "$push": push,
    }, expect={"status": status, "run": event.get("run", 0)})
    if not updated:
        raise Conflict(f"event {event_id} changed while it was being retried; try again")
    return store.get_event(event_id)


def complete_callback(store: Store, token: str, body: Any) -> dict:
    """Complete a waiting step with the outputs its service POSTed to the callback URL.

    Unknown token: NotFound. Spent or expired token: Gone. Outputs that do not match the
    declared outputs: InvalidData, and the step keeps waiting for a correct callback.
    """
    token_hash = hash_token(token)
    event, spent = store.find_by_callback(token_hash)
    if spent:
        raise Gone("this callback was already used")
    if event is None:
        event = _await_parking(store, token, token_hash)
    waiting = event["waiting"]
    if waiting["expires"].replace(tzinfo=None) < utcnow():
        raise Gone("the deadline of this callback has passed")
    step = event["plan"]["steps"][waiting["step"]]
    if not isinstance(body, dict):
        raise InvalidData(f"callback body must be a JSON object of outputs, got {types.json_type(body)}")
    outputs, problems = check_outputs(step["service"], body)
    if problems:
        listed = "; ".join(f"{name}: {problem}" for name, problem in problems.items())
        raise InvalidData(f"callback does not match the declared outputs of {step['service']['name']!r}: {listed}",
                          errors=problems)
    record = close_waiting(waiting, status="completed", outputs=outputs)
    now = record["finished_at"]
    context = dict(event["context"])
    dataflow.apply_outputs(step, outputs, context)
    index = waiting["step"] + 1
    fields: dict[str, Any] = {"context": context, "next_step": index, "updated_at": now,
                              "lease_owner": None, "lease_expires": EPOCH}
    if index == len(event["plan"]["steps"]):
        fields.update(status="completed", outputs=dataflow.workflow_outputs(event["plan"], context),
                      finished_at=now)
        if event.get("callback_url"):
            fields["webhook"] = pending_webhook()
    else:
        fields["status"] = "pending"
    if not store.update_event(event["event_id"], {
        "$set": fields, "$unset": {"waiting": ""}, "$push": {"steps": record, "spent_tokens": token_hash},
    }, expect={"status": "waiting", "waiting.token_hash": token_hash}):
        raise Gone("this callback was already used, or its deadline passed")
    return store.get_event(event["event_id"])


def _await_parking(store: Store, token: str, token_hash: str) -> dict:
    """A callback may beat the write that parks its step: wait briefly while the event it names runs."""
    event_id = token.split(".", 1)[0]
    deadline = time.monotonic() + EARLY_CALLBACK_WAIT_S
    while True:
        try:
            event = store.get_event(event_id)
        except NotFound:
            raise NotFound("unknown callback token") from None
        if event.get("waiting", {}).get("token_hash") == token_hash:
            return event
        if event["status"] != "running" or time.monotonic() > deadline:
            event, spent = store.find_by_callback(token_hash)
            if spent:
                raise Gone("this callback was already used")
            if event is None:
                raise NotFound("unknown callback token")
            return event
        time.sleep(0.02)

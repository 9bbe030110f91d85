"""The kinds of the step tree, one small function each: what a node does in a context, given the walk
(``tree.TreeRun``) that holds the records, the failure and the waits.

Each function returns OK (go on), WAIT (this path waits), FAIL (the walk failed) or STOP (not started:
another path failed). A block runs its nodes in order and stops at the first that does not give OK.
"""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any, Mapping

from machinery.language import types
from machinery.language.expressions import ExpressionError
from machinery.runtime import payloads
from machinery.runtime.executor import close_waiting, hash_token, new_callback_token, new_span_id
from machinery.runtime.tree import FAIL, OK, STOP, WAIT, Scope, TreeRun, after_seconds, parse_until
from machinery.store import FINISHED, utcnow


def block(walk: TreeRun, steps: list, context: dict, scope: Scope) -> str:
    for node in steps:
        if walk.stopped.is_set():
            return STOP
        try:
            result = KINDS[node["kind"]](walk, node, context, scope)
        except ExpressionError as error:  # a value the expression cannot take (compared with another type)
            result = walk.fail({"kind": "expression", "message": f"step {node['id']!r}: {error}",
                                "step": node["id"], "instance": scope.name(node["id"])})
        if result != OK:
            return result
    return OK


def combined(results: list[str]) -> str:
    for outcome in (FAIL, WAIT, STOP):
        if outcome in results:
            return outcome
    return OK


def _type_error(walk: TreeRun, node: Mapping[str, Any], scope: Scope, path: str, message: str) -> str:
    return walk.fail({"kind": "type", "message": f"step {node['id']!r}: {path}: {message}", "step": node["id"],
                      "instance": scope.name(node["id"]), "path": path})


def _error(node: Mapping[str, Any], instance: str, error: Mapping[str, Any] | None, **extra: Any) -> dict:
    return {**(error or {"kind": "failed", "message": "failed"}), "step": node["id"], "instance": instance, **extra}


def _apply(node: Mapping[str, Any], outputs: Mapping[str, Any] | None, context: dict) -> None:
    for name, key in (node.get("out") or {}).items():
        if outputs and name in outputs:
            context[key] = outputs[name]


def _inputs(walk: TreeRun, node: Mapping[str, Any], fields: list, context: Mapping[str, Any],
            scope: Scope) -> tuple[dict | None, str | None]:
    """The inputs of a call or child, read with its `in` expressions and checked against their types
    (what the planner could not prove, an `any`, is caught here, naming the path)."""
    nullable = {field["name"] for field in fields if field.get("nullable")}
    inputs: dict[str, Any] = {}
    for name, source in (node.get("in") or {}).items():
        value = walk.search(source, context)
        if value is not None or name in nullable:
            inputs[name] = value
    problems = types.check(inputs, fields)
    if problems:
        listed = "; ".join(f"{node['id']}.in.{name}: {problem}" for name, problem in problems.items())
        return None, _type_error(walk, node, scope, f"{node['id']}.in", f"inputs do not match: {listed}")
    return inputs, None


# -- call ------------------------------------------------------------------------------------


def call(walk: TreeRun, node: Mapping[str, Any], context: dict, scope: Scope) -> str:
    instance = scope.name(node["id"])
    service = walk.plan["services"][node["service"]]
    record = walk.record(instance)
    if record is not None:
        return _resume_call(walk, node, record, context, instance)
    if not walk.may_start():
        return STOP
    inputs, failed = _inputs(walk, node, service["inputs"], context, scope)
    if failed:
        return failed
    token = callback_url = None
    base = walk.event.get("callback_base")
    if base:
        token = new_callback_token(walk.event_id)
        callback_url = f"{base.rstrip('/')}/callbacks/{token}"
    span_id = new_span_id()
    walk.count(node["id"], n=1, running=1)
    started_at, started = utcnow(), time.monotonic()
    with walk.calls:
        outcome = walk.executor.run_step(walk.event, {"service": service, "index": instance}, inputs, walk.run,
                                         span_id, callback_url)
    if outcome.status == "queued":
        walk.count(node["id"], running=-1, queued=1)
        return walk.hold(outcome.queued)
    record = walk.new_record(node, instance, scope, service=service["name"], status=outcome.status,
                             attempts=outcome.attempts, attempt_log=outcome.attempt_log, span_id=span_id,
                             started_at=started_at)
    if outcome.request is not None:
        record["request"] = outcome.request
    if outcome.status == "waiting":
        timeout = float(service.get("callback_timeout_s") or walk.config.get("CALLBACK_TIMEOUT_S", 3600.0))
        record.update(token_hash=hash_token(token) if token else None, expires=after_seconds(timeout))
        walk.count(node["id"], running=-1, waiting=1)
        stored = walk.write(record)
        if stored["status"] != "waiting":
            return _resume_call(walk, node, stored, context, instance)
        return walk.wait(stored["expires"], stored)
    record.update(finished_at=utcnow(), duration_ms=round((time.monotonic() - started) * 1000, 3))
    walk.executor.observer.step_finished(service["name"], outcome.status, time.monotonic() - started,
                                         workflow=walk.event.get("workflow_name", ""), step=node["id"])
    if outcome.status == "failed":
        record["error"] = outcome.error
    else:
        record["outputs"] = walk.values.outputs(outcome.outputs)
    walk.count(node["id"], running=-1, **({"done": 1} if outcome.status == "completed" else {"failed": 1}))
    stored = walk.write(record)
    return _resume_call(walk, node, stored, context, instance, counted=True)


def _resume_call(walk: TreeRun, node: Mapping[str, Any], record: dict, context: dict, instance: str,
                 counted: bool = False) -> str:
    """A call with a record: apply it, fail with it, or look at its wait."""
    status = record["status"]
    if status == "waiting":
        expires = record.get("expires")
        if expires is not None and expires.replace(tzinfo=None) <= utcnow():
            closed = close_waiting(record, status="failed", error={
                "kind": "callback_timeout", "message": "the service's callback did not come before its deadline"})
            record = walk.change(record, {key: closed[key] for key in ("status", "error", "finished_at", "duration_ms")
                                          if key in closed})
            status = "failed"
        else:
            if not counted:
                walk.count(node["id"], n=1, waiting=1)
            return walk.wait(expires, record)
    if not counted:
        walk.count(node["id"], n=1, **({"done": 1} if status == "completed" else {"failed": 1}))
    if status == "failed":
        return walk.fail(_error(node, instance, record.get("error"), service=record.get("service")))
    _apply(node, record.get("outputs"), context)
    return OK


# -- if and switch -------------------------------------------------------------------------


def _condition(walk: TreeRun, node: Mapping[str, Any], source: str, context: Mapping[str, Any], scope: Scope,
               path: str) -> bool | str:
    value = walk.search(source, context)
    if not isinstance(value, bool):
        return _type_error(walk, node, scope, path, f"expected bool, got {types.json_type(value)}")
    return value


def if_(walk: TreeRun, node: Mapping[str, Any], context: dict, scope: Scope) -> str:
    value = _condition(walk, node, node["if"], context, scope, f"{node['id']}.if")
    if isinstance(value, str):
        return value
    branch = "then" if value else "else"
    walk.taken(node["id"], branch)
    return block(walk, node.get(branch) or [], context, scope.inside(node["id"]))


def switch(walk: TreeRun, node: Mapping[str, Any], context: dict, scope: Scope) -> str:
    for number, case in enumerate(node.get("cases") or []):
        value = _condition(walk, node, case["when"], context, scope, f"{node['id']}.cases[{number}].when")
        if isinstance(value, str):
            return value
        if value:
            walk.taken(node["id"], str(number))
            return block(walk, case["steps"], context, scope.inside(node["id"]))
    walk.taken(node["id"], "default")
    return block(walk, node.get("default") or [], context, scope.inside(node["id"]))


# -- parallel and map ------------------------------------------------------------------------


def parallel(walk: TreeRun, node: Mapping[str, Any], context: dict, scope: Scope) -> str:
    branches = node["branches"]
    inner = scope.inside(node["id"])
    contexts = [dict(context) for _ in branches]
    walk.count(node["id"], n=len(branches))

    def branch(number: int) -> str:
        result = block(walk, branches[number]["steps"], contexts[number], inner)
        walk.count(node["id"], **({"done": 1} if result == OK else {"failed": 1} if result == FAIL else {}))
        return result
    results = walk.together(branch, range(len(branches)), len(branches))
    for branch_context in contexts:  # branches never write the same key (the planner refuses it)
        for key, value in branch_context.items():
            if key not in context or context[key] is not value:
                context[key] = value
    return combined(results)


def map_(walk: TreeRun, node: Mapping[str, Any], context: dict, scope: Scope) -> str:
    values = walk.search(node["map"], context)
    if not isinstance(values, list):
        return _type_error(walk, node, scope, f"{node['id']}.map", f"expected array, got {types.json_type(values)}")
    walk.count(node["id"], n=len(values))
    items: list[dict | None] = [None] * len(values)

    def item(index: int) -> str:
        item_context = {**context, node["as"]: values[index]}
        result = block(walk, node["steps"], item_context, scope.item(node["id"], index))
        items[index] = item_context
        walk.count(node["id"], **({"done": 1} if result == OK else {"failed": 1} if result == FAIL else {}))
        return result
    result = combined(walk.together(item, range(len(values)), int(node.get("max_concurrency") or 8)))
    if result == OK:
        for key, source in (node.get("collect") or {}).items():
            context[key] = [walk.search(source, item_context) for item_context in items]
    return result


# -- sleep ---------------------------------------------------------------------------------


def sleep(walk: TreeRun, node: Mapping[str, Any], context: dict, scope: Scope) -> str:
    instance = scope.name(node["id"])
    record = walk.record(instance)
    if record is None:
        if "until" in node:
            value = walk.search(node["until"], context)
            until = parse_until(value)
            if until is None:
                return _type_error(walk, node, scope, f"{node['id']}.until",
                                   f"expected an ISO 8601 date-time string, got {types.json_type(value)}")
        else:
            until = after_seconds(node.get("seconds") or 0)
        if not walk.may_start():
            return STOP
        now = utcnow()
        record = walk.write(walk.new_record(node, instance, scope, status="waiting", until=until, started_at=now))
    if record["status"] == "waiting":
        until = record["until"].replace(tzinfo=None)
        if until > utcnow():
            walk.count(node["id"], n=1, waiting=1)
            return walk.wait(until, record)
        now = utcnow()
        started = record.get("started_at")
        record = walk.change(record, {"status": "completed", "finished_at": now, "duration_ms": round(
            (now - started.replace(tzinfo=None)).total_seconds() * 1000, 3) if started else None})
    walk.count(node["id"], n=1, done=1)
    return OK


# -- poll ----------------------------------------------------------------------------------


def poll(walk: TreeRun, node: Mapping[str, Any], context: dict, scope: Scope) -> str:
    """Call the service; while `until` over its outputs is false, park the event (it waits in the store,
    not in a thread) and call again at the next interval, until the condition holds or the timeout
    passes. One record for all the polls, changed at each: their count and the last outputs."""
    instance = scope.name(node["id"])
    record = walk.record(instance)
    if record is not None and record["status"] != "waiting":
        return _resume_call(walk, node, record, context, instance)
    if record is not None and record["next_poll_at"].replace(tzinfo=None) > utcnow():
        walk.count(node["id"], n=1, waiting=1)
        return walk.wait(record["next_poll_at"], record)
    if not walk.may_start():
        return STOP
    service = walk.plan["services"][node["service"]]
    inputs, failed = _inputs(walk, node, service["inputs"], context, scope)
    if failed:
        return failed
    walk.count(node["id"], n=1, running=1)
    started = time.monotonic()
    with walk.calls:
        outcome = walk.executor.run_step(walk.event, {"service": service, "index": instance}, inputs, walk.run,
                                         new_span_id(), None)
    if outcome.status == "queued":
        walk.count(node["id"], running=-1, queued=1)
        return walk.hold(outcome.queued)
    walk.executor.observer.step_finished(service["name"], outcome.status, time.monotonic() - started,
                                         workflow=walk.event.get("workflow_name", ""), step=node["id"])
    now = utcnow()
    first = record is None
    polls = (record or {}).get("polls", 0) + 1
    began = now if first else record["started_at"].replace(tzinfo=None)
    fields: dict[str, Any] = {"polls": polls, "attempts": outcome.attempts, "attempt_log": outcome.attempt_log[-3:],
                              "last_polled_at": now}
    if outcome.request is not None:
        fields["request"] = outcome.request
    done = False
    if outcome.status == "completed":
        done = walk.search(node["until"], outcome.outputs)
        fields["last_outputs"] = outcome.outputs = walk.values.outputs(outcome.outputs)
        if not isinstance(done, bool):
            walk.count(node["id"], running=-1)
            return _type_error(walk, node, scope, f"{node['id']}.until",
                               f"expected bool, got {types.json_type(done)} on the reply of poll {polls}")
    elapsed = (now - began).total_seconds()
    timeout, every = node.get("timeout_s", 3600.0), node.get("interval_s", 5.0)
    if outcome.status == "failed":
        fields.update(status="failed", error=outcome.error, finished_at=now)
    elif done:
        fields.update(status="completed", outputs=outcome.outputs, finished_at=now)
    elif elapsed >= timeout:
        fields.update(status="failed", finished_at=now, error={
            "kind": "poll_timeout", "message": f"{node['until']} did not hold within {timeout:g} s ({polls} polls)"})
    else:
        interval = min(every * node.get("backoff", 1.0) ** (polls - 1),
                       node.get("max_interval_s") or max(every, 3600.0))
        deadline = began + timedelta(seconds=timeout)
        fields.update(status="waiting", next_poll_at=min(now + timedelta(seconds=interval), deadline))
    if "finished_at" in fields:
        fields["duration_ms"] = round(elapsed * 1000, 3)
    walk.count(node["id"], running=-1)
    if first:
        record = walk.write(walk.new_record(node, instance, scope, service=service["name"], started_at=now,
                                            **fields))
    else:
        record = walk.change(record, fields)
    if record["status"] == "waiting":
        walk.count(node["id"], waiting=1)
        return walk.wait(record["next_poll_at"], record)
    return _ended_poll(walk, node, record, context, instance)


def _ended_poll(walk: TreeRun, node: Mapping[str, Any], record: dict, context: dict, instance: str) -> str:
    walk.count(node["id"], **({"done": 1} if record["status"] == "completed" else {"failed": 1}))
    if record["status"] == "failed":
        return walk.fail(_error(node, instance, record.get("error"), service=record.get("service")))
    _apply(node, record.get("outputs"), context)
    return OK


# -- child workflow --------------------------------------------------------------------------


def workflow(walk: TreeRun, node: Mapping[str, Any], context: dict, scope: Scope) -> str:
    from machinery import events

    instance = scope.name(node["id"])
    record = walk.record(instance)
    child_ref = walk.plan["workflows"][node["workflow"]]
    if record is None:
        inputs, failed = _inputs(walk, node, child_ref["inputs"], context, scope)
        if failed:
            return failed
        if not walk.may_start():
            return STOP
        key = f"{walk.event_id}:{instance}:{walk.run}"
        try:
            child, _ = events.new_event(walk.store, child_ref.get("workflow_id") or node["workflow"],
                                        {"data": inputs}, idempotency_key=key,
                                        callback_base=walk.event.get("callback_base"), trace=walk.event.get("trace"),
                                        parent={"event_id": walk.event_id, "instance": instance, "run": walk.run})
        except Exception as error:  # the child's workflow was removed or no longer checks
            payloads.forget_encoded()  # a large input checked for the child, not stored
            message = getattr(error, "message", str(error))
            walk.count(node["id"], n=1, failed=1)
            return walk.fail({"kind": "workflow", "message": f"child workflow {node['workflow']!r} could not "
                              f"start: {message}", "step": node["id"], "instance": instance})
        record = walk.write(walk.new_record(node, instance, scope, status="waiting", started_at=utcnow(),
                                            workflow=node["workflow"], child_event_id=child["event_id"]))
    if record["status"] == "waiting":
        try:
            child = walk.store.get_event(record["child_event_id"])
        except Exception:
            child = {"status": "failed", "error": {"kind": "workflow", "message": "the child event is gone"}}
        if child["status"] not in FINISHED:
            walk.count(node["id"], n=1, waiting=1)
            return walk.wait(None, record)
        now = utcnow()
        if child["status"] == "completed":
            outputs = walk.values.rehome(child.get("outputs") or {})  # kept when the child is removed
            record = walk.change(record, {"status": "completed", "outputs": outputs,
                                          "finished_at": now})
        elif child["status"] == "cancelled":
            record = walk.change(record, {"status": "failed", "finished_at": now, "error": {
                "kind": "cancelled", "message": f"child workflow {node['workflow']!r} (event {child.get('event_id')}) "
                                                f"was cancelled by {(child.get('cancelled') or {}).get('by')}"}})
        else:
            error = child.get("error") or {}
            record = walk.change(record, {"status": "failed", "finished_at": now, "error": {
                "kind": error.get("kind", "workflow"),
                "message": f"child workflow {node['workflow']!r} (event {child.get('event_id')}) failed: "
                           f"{error.get('message', 'no message')}"}})
    if record["status"] == "failed":
        walk.count(node["id"], n=1, failed=1)
        return walk.fail(_error(node, instance, record.get("error"), child_event_id=record.get("child_event_id")))
    walk.count(node["id"], n=1, done=1)
    _apply(node, record.get("outputs"), context)
    return OK


KINDS = {"call": call, "if": if_, "switch": switch, "parallel": parallel, "map": map_, "sleep": sleep,
         "workflow": workflow, "poll": poll}

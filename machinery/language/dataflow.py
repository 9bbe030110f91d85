"""Plan a workflow: resolve its steps, apply operations, and check the data flow before anything runs."""

from __future__ import annotations

import json
from typing import Any, Mapping

from machinery.exceptions import DataflowError
from machinery.language import types

# What a plan keeps of each service: enough to call it without reading the registry again.
SERVICE_FIELDS = ("name", "address", "inputs", "outputs", "timeout_s", "retry", "callback_timeout_s",
                  "request", "success", "fingerprint", "max_concurrency", "rate_limit", "breaker")


def _operations_for(workflow: Mapping[str, Any], problems: list[dict]) -> dict[int, dict]:
    """Map each step index to its renames: {"inputs": {...}, "outputs": {...}}."""
    services = workflow["services"]
    per_step: dict[int, dict] = {index: {"inputs": {}, "outputs": {}} for index in range(len(services))}
    for number, operation in enumerate(workflow.get("operations") or []):
        service = operation["service"]
        where = f"operations[{number}]"
        positions = [index for index, name in enumerate(services) if name == service]
        if "step" in operation and operation["step"] is not None:
            step = operation["step"]
            if step not in positions:
                problems.append({
                    "where": where, "field": "step",
                    "problem": f"step {step} is not a step of service {service!r}; "
                               f"{service!r} is at steps {positions or 'none'}",
                })
                continue
            positions = [step]
        elif not positions:
            problems.append({
                "where": where, "field": "service",
                "problem": f"service {service!r} is not a step of this workflow",
            })
            continue
        for index in positions:
            for direction in ("inputs", "outputs"):
                per_step[index][direction].update(operation.get(direction) or {})
    return per_step


def _slot(field: Mapping[str, Any]) -> dict:
    """What the context knows of a key a field fills: {"type": <normal type>, "required": bool}."""
    normal = types.parse_field(field)
    return {"type": normal["type"], "required": normal["required"]}


def _available(context: Mapping[str, dict]) -> dict[str, str]:
    return {key: types.describe(slot) for key, slot in context.items()}


def _write(context: dict[str, dict], key: str, slot: dict) -> None:
    """A step's output lands in the context; an optional one may leave the value that was there."""
    previous = context.get(key)
    if slot["required"] or previous is None:
        context[key] = slot
    elif types.compatible(previous["type"], slot["type"]):
        context[key] = {"type": slot["type"], "required": previous["required"]}
    else:
        context[key] = {"type": types.parse_type("any"), "required": previous["required"]}


def plan(workflow: Mapping[str, Any], services: Mapping[str, Mapping[str, Any]], *,
         suggest: bool = True) -> dict[str, Any]:
    """Resolve a workflow against the registered services and check its data flow.

    Returns the plan: {"inputs", "outputs", "steps": [{"index", "service", "inputs", "outputs"}]}
    where a step's `inputs` maps each service input to the context key it is read from and
    `outputs` maps each service output to the context key it is written to.
    Raises DataflowError listing every problem: the step, the field, what was available (each
    key's type, described), and for a workflow output never produced, the rename that would fix it.
    """
    problems: list[dict] = []
    missing = [name for name in dict.fromkeys(workflow["services"]) if name not in services]
    if missing:
        raise DataflowError(
            f"unknown service{'s' if len(missing) > 1 else ''}: {', '.join(missing)}",
            errors=[{"field": "services", "service": name, "problem": "not registered"} for name in missing],
        )
    renames = _operations_for(workflow, problems)

    # The context at each point: key -> {"type", "required"}.
    context: dict[str, dict] = {field["name"]: _slot(field) for field in workflow["inputs"]}
    steps = []
    for index, name in enumerate(workflow["services"]):
        service = services[name]
        step_renames = renames[index]
        for unknown in sorted(set(step_renames["inputs"]) - {f["name"] for f in service["inputs"]}):
            problems.append({"step": index, "service": name, "field": unknown,
                             "problem": f"operation renames input {unknown!r}, which {name!r} does not declare"})
        for unknown in sorted(set(step_renames["outputs"]) - {f["name"] for f in service["outputs"]}):
            problems.append({"step": index, "service": name, "field": unknown,
                             "problem": f"operation renames output {unknown!r}, which {name!r} does not declare"})
        input_keys = {}
        for field in service["inputs"]:
            key = step_renames["inputs"].get(field["name"], field["name"])
            input_keys[field["name"]] = key
            wanted = _slot(field)
            shown = types.describe(wanted["type"])
            source = f"context key {key!r}" if key == field["name"] else f"context key {key!r} (renamed)"
            slot = context.get(key)
            if slot is None:
                if wanted["required"]:
                    problems.append({
                        "step": index, "service": name, "field": field["name"],
                        "problem": f"input {field['name']!r} ({shown}) needs {source}, which is not available",
                        "available": _available(context),
                    })
                continue
            misfits = types.incompatibilities(slot["type"], wanted["type"])
            if misfits:
                problems.append({
                    "step": index, "service": name, "field": field["name"],
                    "problem": f"input {field['name']!r} expects {shown} but {source} is "
                               f"{types.describe(slot['type'])}" + _where(misfits),
                    "available": _available(context),
                })
            elif wanted["required"] and not slot["required"]:
                problems.append({
                    "step": index, "service": name, "field": field["name"],
                    "problem": f"input {field['name']!r} is required but {source} may be absent "
                               "(an optional input or output fills it)",
                    "available": _available(context),
                })
        output_keys = {}
        for field in service["outputs"]:
            key = step_renames["outputs"].get(field["name"], field["name"])
            output_keys[field["name"]] = key
            _write(context, key, _slot(field))
        steps.append({
            "index": index,
            "service": {key: _without_schemas(key, service[key]) for key in SERVICE_FIELDS
                        if service.get(key) is not None},
            "inputs": input_keys,
            "outputs": output_keys,
        })

    for field in workflow["outputs"]:
        wanted = _slot(field)
        shown = types.describe(wanted["type"])
        slot = context.get(field["name"])
        if slot is None:
            if wanted["required"]:
                problem = {
                    "step": "end", "field": field["name"],
                    "problem": f"workflow output {field['name']!r} ({shown}) is never produced",
                    "available": _available(context),
                }
                if suggest:
                    _suggest(problem, workflow, services, field, steps)
                problems.append(problem)
            continue
        misfits = types.incompatibilities(slot["type"], wanted["type"])
        if misfits:
            problems.append({
                "step": "end", "field": field["name"],
                "problem": f"workflow output {field['name']!r} expects {shown} "
                           f"but the context holds {types.describe(slot['type'])}" + _where(misfits),
                "available": _available(context),
            })
        elif wanted["required"] and not slot["required"]:
            problems.append({
                "step": "end", "field": field["name"],
                "problem": f"workflow output {field['name']!r} is required but may be absent "
                           "(an optional input or output fills it)",
                "available": _available(context),
            })
    if problems:
        first = problems[0]
        where = f"step {first['step']} ({first['service']})" if "service" in first else str(
            first.get("where") or f"step {first['step']}")
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DataflowError(f"data flow does not check: {where}: {first['problem']}{more}", errors=problems)
    return {
        "inputs": [_without_schema(field) for field in workflow["inputs"]],
        "outputs": [_without_schema(field) for field in workflow["outputs"]],
        "steps": steps,
    }


def _where(misfits: list[str]) -> str:
    """The first few paths at which two types differ, when they differ inside a structure."""
    inner = [text for text in misfits if not text.startswith("expected ")]
    if not inner:
        return ""
    return " (" + "; ".join(inner[:3]) + (f"; and {len(inner) - 3} more" if len(inner) > 3 else "") + ")"


def _without_schema(field: Mapping[str, Any]) -> dict:
    # A plan is copied into every event: the type says all the runtime needs, the schema stays in the registry.
    return {key: value for key, value in field.items() if key != "schema"}


def _without_schemas(key: str, value: Any) -> Any:
    if key in ("inputs", "outputs"):
        return [_without_schema(field) for field in value]
    return value


MAX_SUGGESTIONS = 8


def _suggest(problem: dict, workflow: Mapping[str, Any], services: Mapping[str, Mapping[str, Any]],
             wanted: Mapping[str, Any], steps: list[dict]) -> None:
    """Name the operation that would produce a missing workflow output: a step's output of a fitting
    type, renamed to it, checked by planning the workflow with that operation added."""
    target = _slot(wanted)
    tried, baseline = 0, None
    for step in reversed(steps):
        service = services[workflow["services"][step["index"]]]
        for field in service["outputs"]:
            if step["outputs"][field["name"]] == wanted["name"]:
                continue
            slot = _slot(field)
            if types.incompatibilities(slot["type"], target["type"]) or (target["required"] and not slot["required"]):
                continue
            tried += 1
            if tried > MAX_SUGGESTIONS:
                return
            operation: dict[str, Any] = {"service": service["name"], "outputs": {field["name"]: wanted["name"]}}
            if workflow["services"].count(service["name"]) > 1:
                operation["step"] = step["index"]
            fixed = {**workflow, "operations": [*(workflow.get("operations") or []), operation]}
            try:
                plan(fixed, services, suggest=False)
            except DataflowError as error:
                if any(other.get("step") == "end" and other.get("field") == wanted["name"]
                       for other in error.errors):
                    continue
                if baseline is None:
                    baseline = _count_problems(workflow, services)
                if len(error.errors) >= baseline:
                    continue
            text = json.dumps(operation)
            problem["problem"] += (f"; step {step['index']} ({service['name']}) produces {field['name']!r} "
                                   f"({types.describe(slot['type'])}): add {text} to operations")
            problem["suggestion"] = {"operations": [operation]}
            return


def _count_problems(workflow: Mapping[str, Any], services: Mapping[str, Mapping[str, Any]]) -> int:
    try:
        plan(workflow, services, suggest=False)
    except DataflowError as error:
        return len(error.errors)
    return 0


def step_inputs(step: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """The body sent to a step's service: its declared inputs, read from the context."""
    return {field: context[key] for field, key in step["inputs"].items() if key in context}


def apply_outputs(step: Mapping[str, Any], outputs: Mapping[str, Any], context: dict[str, Any]) -> None:
    """Write a step's declared outputs into the context under their (renamed) keys."""
    for field, key in step["outputs"].items():
        if field in outputs:
            context[key] = outputs[field]


def workflow_outputs(plan_: Mapping[str, Any], context: Mapping[str, Any]) -> dict[str, Any]:
    """The workflow's outputs, read from the context at the end."""
    return {field["name"]: context[field["name"]] for field in plan_["outputs"] if field["name"] in context}

"""Plan a workflow: resolve its steps, apply operations, and check the data flow before anything runs."""

from __future__ import annotations

from typing import Any, Mapping

from machinery.exceptions import DataflowError
from machinery.language import types

# What a plan keeps of each service: enough to call it without reading the registry again.
SERVICE_FIELDS = ("name", "address", "inputs", "outputs", "timeout_s", "retry", "callback_timeout_s",
                  "request", "success", "fingerprint")


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


def plan(workflow: Mapping[str, Any], services: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """Resolve a workflow against the registered services and check its data flow.

    Returns the plan: {"inputs", "outputs", "steps": [{"index", "service", "inputs", "outputs"}]}
    where a step's `inputs` maps each service input to the context key it is read from and
    `outputs` maps each service output to the context key it is written to.
    Raises DataflowError listing every problem: the step, the field, what was available.
    """
    problems: list[dict] = []
    missing = [name for name in dict.fromkeys(workflow["services"]) if name not in services]
    if missing:
        raise DataflowError(
            f"unknown service{'s' if len(missing) > 1 else ''}: {', '.join(missing)}",
            errors=[{"field": "services", "service": name, "problem": "not registered"} for name in missing],
        )
    renames = _operations_for(workflow, problems)

    # The context at each point: key -> declared type.
    context: dict[str, str] = {field["name"]: types.canonical(field["type"]) for field in workflow["inputs"]}
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
            wanted = types.canonical(field["type"])
            source = f"context key {key!r}" if key == field["name"] else f"context key {key!r} (renamed)"
            if key not in context:
                problems.append({
                    "step": index, "service": name, "field": field["name"],
                    "problem": f"input {field['name']!r} ({wanted}) needs {source}, which is not available",
                    "available": dict(context),
                })
            elif not types.compatible(context[key], wanted):
                problems.append({
                    "step": index, "service": name, "field": field["name"],
                    "problem": f"input {field['name']!r} expects {wanted} but {source} is {context[key]}",
                    "available": dict(context),
                })
        output_keys = {}
        for field in service["outputs"]:
            key = step_renames["outputs"].get(field["name"], field["name"])
            output_keys[field["name"]] = key
            context[key] = types.canonical(field["type"])
        steps.append({
            "index": index,
            "service": {key: service[key] for key in SERVICE_FIELDS if service.get(key) is not None},
            "inputs": input_keys,
            "outputs": output_keys,
        })

    for field in workflow["outputs"]:
        wanted = types.canonical(field["type"])
        if field["name"] not in context:
            problems.append({
                "step": "end", "field": field["name"],
                "problem": f"workflow output {field['name']!r} ({wanted}) is never produced",
                "available": dict(context),
            })
        elif not types.compatible(context[field["name"]], wanted):
            problems.append({
                "step": "end", "field": field["name"],
                "problem": f"workflow output {field['name']!r} expects {wanted} "
                           f"but the context holds {context[field['name']]}",
                "available": dict(context),
            })
    if problems:
        first = problems[0]
        where = f"step {first['step']} ({first['service']})" if "service" in first else str(
            first.get("where") or f"step {first['step']}")
        more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
        raise DataflowError(f"data flow does not check: {where}: {first['problem']}{more}", errors=problems)
    return {
        "inputs": [dict(field) for field in workflow["inputs"]],
        "outputs": [dict(field) for field in workflow["outputs"]],
        "steps": steps,
    }


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

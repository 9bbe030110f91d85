"""Register, replace and delete services and workflows, keeping every registered workflow checked."""

from __future__ import annotations

from typing import Any, Mapping

from machinery import search, secrets
from machinery.exceptions import Conflict, DataflowError, InvalidData, NotFound
from machinery.language import dataflow, plan
from machinery.runtime import calls
from machinery.store import Store


def plan_workflow(store: Store, workflow: Mapping[str, Any],
                  replacing: Mapping[str, Any] | None = None,
                  replacing_workflow: Mapping[str, Any] | None = None) -> dict:
    """Resolve a workflow against the registry (with one service or child workflow definition swapped
    in, if given): a step tree (``steps``) by plan.plan_tree, a chain by dataflow.plan."""
    if "steps" not in workflow:
        services = store.find_services(workflow["services"])
        if replacing is not None:
            services[replacing["name"]] = dict(replacing)
        planned = dataflow.plan(workflow, services)
        return _with_search(planned, workflow, lambda: _chain_context(planned))
    names, children = plan.called(workflow["steps"])
    services = store.find_services(names)
    if replacing is not None and replacing["name"] in names:
        services[replacing["name"]] = dict(replacing)
    workflows = _children(store, workflow, children, replacing_workflow)
    planned = plan.plan_tree(workflow, services, workflows)
    return _with_search(planned, workflow, lambda: plan.final_context(workflow, services, workflows))


def _with_search(planned: dict, workflow: Mapping[str, Any], context) -> dict:
    """The plan with the workflow's search paths (search.checked_paths), checked over the context a run ends with."""
    if workflow.get("search"):
        planned["search"] = search.checked_paths(workflow["search"], context())
    return planned


def _chain_context(planned: Mapping[str, Any]) -> dict[str, dict]:
    """The context keys a chain's run may end with, each possibly absent (a run may fail before)."""
    from machinery.events import context_types

    return {key: {"type": kind, "required": False}
            for key, kind in context_types(planned, len(planned["steps"])).items()}


def _children(store: Store, workflow: Mapping[str, Any], names: list[str],
              replacing: Mapping[str, Any] | None) -> dict[str, dict]:
    """The registered workflows a tree runs, and theirs in turn (to find a cycle), by name; a name
    not registered is left out, and the check names the step that runs it."""
    found: dict[str, dict] = {}
    pending = list(names)
    while pending and len(found) < plan.MAX_CHILDREN:
        name = pending.pop(0)
        if name in found or name == workflow.get("name"):
            continue
        if replacing is not None and name == replacing["name"]:
            child = dict(replacing)
        else:
            try:
                child = store.get_workflow(name)
            except NotFound:
                continue
        if child.get("name") != name:
            continue  # a workflow id that happens to look like a name: children are named
        found[name] = child
        pending.extend(plan.children_of(child))
    return found


def derived(definition: Mapping[str, Any]) -> dict:
    """A step tree as stored: the definition plus the services it calls and the workflows it runs."""
    if "steps" not in definition:
        return dict(definition)
    names, children = plan.called(definition["steps"])
    return {**definition, "services": names, "workflows": children}


_PLANS: dict[tuple, dict] = {}
PLAN_CACHE_SIZE = 256


def event_plan(store: Store, workflow: Mapping[str, Any]) -> dict:
    """The plan a new event snapshots: resolved once per workflow version and service revisions, then reused.

    Keyed on the workflow's id, version and updated_at and on the store's revision of its services,
    so a workflow or service replaced by any process gets a fresh plan; a missing service is never
    cached (plan_workflow raises). Events copy the plan when they are stored.
    """
    key = (workflow["workflow_id"], workflow.get("version"), workflow.get("updated_at"),
           store.services_revision(workflow["services"]),
           tuple(_child_revision(store, name) for name in plan.children_of(workflow)))
    planned = _PLANS.get(key)
    if planned is None:
        planned = plan_workflow(store, workflow)
        if len(_PLANS) >= PLAN_CACHE_SIZE:
            _PLANS.clear()
        _PLANS[key] = planned
    return planned


def _child_revision(store: Store, name: str) -> tuple:
    try:
        child = store.get_workflow(name)
    except NotFound:
        return (name, None)
    return (name, child.get("workflow_id"), child.get("version"), str(child.get("updated_at")))


def register_service(store: Store, definition: Mapping[str, Any]) -> tuple[dict, bool]:
    """Register a service, or replace it by name.

    A replacement that would break a registered workflow's data flow is refused (Conflict),
    so that every registered workflow always checks. The check and the write hold the registry
    lock (Store.registry_lock), so that no other process registers or deletes in between.
    """
    definition = calls.checked(definition, lambda name: secrets.known(store, name))
    with store.registry_lock():
        return _register_service(store, definition)


def _broken(store: Store, users: list[Mapping[str, Any]], **replacing: Any) -> dict:
    """The registered workflows among `users` that no longer check with a definition swapped in
    (`replacing` or `replacing_workflow`, as plan_workflow takes them), each with its errors."""
    broken = {}
    for workflow in users:
        try:
            plan_workflow(store, workflow, **replacing)
        except DataflowError as error:
            broken[workflow["name"]] = error.errors
    return broken


def _register_service(store: Store, definition: Mapping[str, Any]) -> tuple[dict, bool]:
    broken = _broken(store, store.workflows_using(definition["name"]), replacing=definition)
    if broken:
        raise Conflict(
            f"replacing service {definition['name']!r} would break workflow"
            f"{'s' if len(broken) > 1 else ''} {', '.join(broken)}",
            errors={"workflows": broken},
        )
    return store.put_service(definition)


def replace_service(store: Store, ref: str, definition: Mapping[str, Any]) -> dict:
    """Replace the definition of an existing service (PUT); the name cannot change."""
    current = store.get_service(ref)
    if definition["name"] != current["name"]:
        raise InvalidData(
            f"the name cannot change: this service is {current['name']!r}, the body says "
            f"{definition['name']!r}; register a new service instead",
            errors={"name": [f"must be {current['name']!r}"]},
        )
    service, _ = register_service(store, definition)
    return service


def register_workflow(store: Store, definition: Mapping[str, Any]) -> tuple[dict, bool]:
    """Check a workflow's data flow against the registry, then register it (a new version by name),
    holding the registry lock, so that no service it names is deleted or changed in between."""
    definition = derived(definition)
    with store.registry_lock():
        plan_workflow(store, definition)
        _check_parents(store, definition)
        return store.put_workflow(definition)


def check_workflow(store: Store, definition: Mapping[str, Any]) -> dict:
    """Plan a definition as registering it would, registering nothing: the plan (DataflowError if not)."""
    return plan_workflow(store, derived(definition))


def delete_workflow(store: Store, ref: str) -> dict:
    """Delete a workflow; Conflict naming the registered workflows that run it as a child (their events
    would fail at that step). The check and the delete hold the registry lock, so that no process
    registers a parent of it in between."""
    with store.registry_lock():
        workflow = store.get_workflow(ref)
        parents = sorted(parent["name"] for parent in store.workflows_running(workflow["name"])
                         if parent["name"] != workflow["name"])
        if parents:
            several = len(parents) > 1
            raise Conflict(
                f"workflow {workflow['name']!r} is run by workflow{'s' if several else ''} {', '.join(parents)}; "
                f"delete or change {'them' if several else 'it'} first",
                errors={"workflows": parents},
            )
        return store.delete_workflow(workflow["workflow_id"])


def _check_parents(store: Store, definition: Mapping[str, Any]) -> None:
    """Refuse a new version whose inputs or outputs break a registered workflow that runs it."""
    parents = [parent for parent in store.workflows_running(definition["name"])
               if parent["name"] != definition["name"]]
    broken = _broken(store, parents, replacing_workflow=definition)
    if broken:
        raise Conflict(
            f"replacing workflow {definition['name']!r} would break workflow"
            f"{'s' if len(broken) > 1 else ''} {', '.join(broken)}, which run{'' if len(broken) > 1 else 's'} it",
            errors={"workflows": broken},
        )

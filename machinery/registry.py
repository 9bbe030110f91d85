"""Register, replace and delete services and workflows, keeping every registered workflow checked."""

from __future__ import annotations

from typing import Any, Mapping

from machinery import secrets
from machinery.exceptions import Conflict, DataflowError, InvalidData
from machinery.language import dataflow
from machinery.runtime import calls
from machinery.store import Store


def plan_workflow(store: Store, workflow: Mapping[str, Any],
                  replacing: Mapping[str, Any] | None = None) -> dict:
    """Resolve a workflow against the registry (with one service definition swapped in, if given)."""
    services = store.find_services(workflow["services"])
    if replacing is not None:
        services[replacing["name"]] = dict(replacing)
    return dataflow.plan(workflow, services)


_PLANS: dict[tuple, dict] = {}
PLAN_CACHE_SIZE = 256


def event_plan(store: Store, workflow: Mapping[str, Any]) -> dict:
    """The plan a new event snapshots: resolved once per workflow version and service revisions, then reused.

    Keyed on the workflow's id, version and updated_at and on the store's revision of its services,
    so a workflow or service replaced by any process gets a fresh plan; a missing service is never
    cached (plan_workflow raises). Events copy the plan when they are stored.
    """
    key = (workflow["workflow_id"], workflow.get("version"), workflow.get("updated_at"),
           store.services_revision(workflow["services"]))
    plan = _PLANS.get(key)
    if plan is None:
        plan = plan_workflow(store, workflow)
        if len(_PLANS) >= PLAN_CACHE_SIZE:
            _PLANS.clear()
        _PLANS[key] = plan
    return plan


def register_service(store: Store, definition: Mapping[str, Any]) -> tuple[dict, bool]:
    """Register a service, or replace it by name.

    A replacement that would break a registered workflow's data flow is refused (Conflict),
    so that every registered workflow always checks. The check and the write hold the registry
    lock (Store.registry_lock), so that no other process registers or deletes in between.
    """
    definition = calls.checked(definition, lambda name: secrets.known(store, name))
    with store.registry_lock():
        return _register_service(store, definition)


def _register_service(store: Store, definition: Mapping[str, Any]) -> tuple[dict, bool]:
    broken = {}
    for workflow in store.workflows_using(definition["name"]):
        try:
            plan_workflow(store, workflow, replacing=definition)
        except DataflowError as error:
            broken[workflow["name"]] = error.errors
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
    with store.registry_lock():
        plan_workflow(store, definition)
        return store.put_workflow(definition)

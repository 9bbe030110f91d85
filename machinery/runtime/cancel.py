"""Cancel an event and pause a workflow: the store writes that say so, and what the holder of a
running event does when it finds one at a step boundary.

A cancel is a write to the event's document (status ``cancelled``, with who, when and why), never an
in-memory signal only, so that every worker process sees it:

- an event no one holds (pending, waiting, sleeping, polling) ends at once: its waiting step records
  are ended too, so their callback URLs answer 410 and their timers and polls are dropped;
- a running event keeps its holder's lease: the holder finds the cancel at its next step boundary (its
  writes expect the event running, and a tree walk reads the status before it starts anything),
  records what was in flight, starts nothing new and lets the event go (``settle``);
- a child event (a ``workflow`` step) is cancelled with its parent.

A pause is a field of the workflow (who, when). New events of a paused workflow are stored pending and
held (``held: "paused"``, a lease no claim takes); a resume releases them in the order they came.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from machinery.clock import naive_utc
from machinery.exceptions import Conflict, NotFound, TooLarge
from machinery.store import EPOCH, FINISHED, HELD, Store, pending_webhook, utcnow

LOG = logging.getLogger(__name__)

RUNNING = {"status": "running"}  # what an event's holder expects of its writes: a cancel makes them miss

CANCEL_TRIES = 5  # a running event changes status while it is cancelled (it parks, say): read it again
MAX_REASON = 500
ANONYMOUS = "anonymous"


def _cancel_error(by: str, reason: str | None) -> dict:
    message = f"cancelled by {by}" + (f": {reason}" if reason else "")
    return {"kind": "cancelled", "message": message}


def cancel_event(store: Store, event_id: str, by: str = ANONYMOUS, reason: str | None = None,
                 observer=None) -> dict:
    """Cancel an event that has not ended; Conflict naming its status when it has, NotFound when there
    is no such event. Returns the event as stored after the cancel. `observer` (the executor's: the
    metrics and the dashboard) is told that the event ended, and so are its children cancelled with it."""
    from machinery.runtime import tree
    from machinery.runtime.executor import close_waiting

    for _ in range(CANCEL_TRIES):
        event = store.get_event(event_id)
        status = event["status"]
        if status in FINISHED:
            raise Conflict(f"event {event_id} is {status}: only a pending, running or waiting event can be "
                           "cancelled", errors={"status": [status]})
        now = utcnow()
        lease = event.get("lease_expires")
        held = status == "running" and lease is not None and naive_utc(lease) > now
        cancelled = {"by": by, "at": now, "reason": reason, "previous_status": status, "in_flight": held}
        fields: dict[str, Any] = {"status": "cancelled", "cancelled": cancelled, "outputs": None,
                                  "finished_at": now, "updated_at": now}
        if not held:
            # No one holds it (or its holder died: its lease expired), so nothing is in flight: it lets go
            # of its lease now. A held event keeps its holder's lease until the holder has recorded what
            # it was doing (settle).
            fields.update(lease_owner=None, lease_expires=EPOCH)
        if event.get("callback_url"):
            fields["webhook"] = pending_webhook()
        update: dict[str, Any] = {"$set": fields}
        if event.get("held"):
            update["$unset"] = {"held": ""}
        waiting = event.get("waiting")
        if waiting:  # a version 1 event waiting for a callback: its token is spent, its step cancelled
            record = close_waiting(waiting, status="cancelled", error=_cancel_error(by, reason))
            update.setdefault("$unset", {})["waiting"] = ""
            update["$push"] = {"steps": record}
            if waiting.get("token_hash"):
                update["$push"]["spent_tokens"] = waiting["token_hash"]
        if store.update_event(event_id, update, expect={"status": status, "run": event.get("run", 0)}):
            break
    else:
        raise Conflict(f"event {event_id} kept changing while it was being cancelled; try again")
    LOG.info("event %s cancelled by %s (it was %s)", event_id, by, status)
    if (event.get("plan") or {}).get("version") == 2:
        revoke(store, event_id, by, reason, observer)
    tree.event_ended(store, observer, event, "cancelled", now)
    return store.get_event(event_id)


def revoke(store: Store, event_id: str, by: str, reason: str | None = None, observer=None) -> None:
    """End a cancelled tree event's waiting step records (callbacks answer 410, timers and polls are
    dropped) and cancel the child events its workflow steps wait for."""
    now = utcnow()
    ended = store.cancel_step_runs(event_id, {"status": "cancelled", "finished_at": now,
                                              "error": _cancel_error(by, reason)})
    for record in ended:
        child = record.get("child_event_id")
        if not child:
            continue
        try:
            cancel_event(store, child, by, f"its parent event {event_id} was cancelled", observer)
        except (Conflict, NotFound):
            pass  # the child ended meanwhile, or its TTL removed it


def settle(store: Store, event_id: str, owner: str, update: Mapping[str, Any]) -> bool:
    """The holder of an event cancelled while it ran: apply its last write (what the step in flight did)
    without its status, and let the event go. False when the event is not cancelled and held by `owner`
    (its lease was lost)."""
    kept = {key: value for key, value in (update.get("$set") or {}).items()
            if key not in ("status", "outputs", "error", "finished_at", "webhook", "waiting", "lease_expires")}
    kept.update({"lease_owner": None, "lease_expires": EPOCH, "updated_at": utcnow(), "cancelled.in_flight": False})
    settled: dict[str, Any] = {"$set": kept}
    if update.get("$push"):
        settled["$push"] = dict(update["$push"])
    try:
        return store.update_event(event_id, settled, owner=owner, expect={"status": "cancelled"})
    except TooLarge:  # what the step brought does not fit in the record: let the event go without it
        LOG.error("event %s: cancelled, and what its step in flight brought does not fit in its record", event_id)
        return store.update_event(event_id, {"$set": {"lease_owner": None, "lease_expires": EPOCH,
                                                      "cancelled.in_flight": False}},
                                  owner=owner, expect={"status": "cancelled"})


def is_cancelled(store: Store, event_id: str) -> bool:
    return store.event_status(event_id) == "cancelled"


# -- pause and resume --------------------------------------------------------------------------


def pause_workflow(store: Store, ref: str, by: str = ANONYMOUS) -> dict:
    """Pause a workflow: its new events are stored pending and no worker starts them until it is
    resumed; those already running go on. Conflict when it is paused already."""
    workflow = store.get_workflow(ref)
    if workflow.get("paused"):
        raise Conflict(f"workflow {workflow['name']!r} is already paused (by {workflow['paused'].get('by')})",
                       errors={"paused": ["already paused"]})
    if not store.set_workflow_paused(workflow["workflow_id"], {"by": by, "at": utcnow()}, expect_paused=False):
        raise Conflict(f"workflow {workflow['name']!r} is already paused", errors={"paused": ["already paused"]})
    held = store.hold_events(workflow["workflow_id"])
    LOG.info("workflow %s paused by %s (%d pending events held)", workflow["name"], by, held)
    return {**store.get_workflow(workflow["workflow_id"]), "events_held": held}


def resume_workflow(store: Store, ref: str, by: str = ANONYMOUS) -> dict:
    """Resume a paused workflow: the events held while it was paused become claimable, in the order
    they came. Conflict when it is not paused."""
    workflow = store.get_workflow(ref)
    if not workflow.get("paused") or not store.set_workflow_paused(workflow["workflow_id"], None,
                                                                   expect_paused=True):
        raise Conflict(f"workflow {workflow['name']!r} is not paused", errors={"paused": ["not paused"]})
    released = store.release_events(workflow["workflow_id"])
    LOG.info("workflow %s resumed by %s (%d held events released)", workflow["name"], by, released)
    return {**store.get_workflow(workflow["workflow_id"]), "events_released": released}


def held_fields(workflow: Mapping[str, Any]) -> dict:
    """The state of a new event of `workflow` when it is paused (pending, held); {} when it is not."""
    if not workflow.get("paused"):
        return {}
    return {"status": "pending", "lease_owner": None, "lease_expires": HELD, "held": "paused"}


def recheck_held(store: Store, event: Mapping[str, Any]) -> None:
    """An event stored held: if its workflow was resumed meanwhile (the resume's release may have run
    before it was stored), release it now, so that it is not held until the next resume."""
    try:
        workflow = store.get_workflow(event["workflow_id"])
    except NotFound:
        return
    if not workflow.get("paused"):
        store.release_events(event["workflow_id"], event["event_id"])

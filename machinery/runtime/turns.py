"""A workflow's `concurrency`: at most `limit` running events per value of `key` (a JMESPath over the
event's data), the others queued in the order they came.

An event of such a workflow carries ``concurrency: {"key": "<workflow id>:<value as JSON>", "limit", "held"}``
from the moment it is accepted. Before it runs, it takes a turn: one compare-and-set on the key's flow
document (``_id: "workflow:<key>"``, ``holders: {event id: ack_date}``) that succeeds only while fewer
than `limit` events hold the key and no event of that key that came earlier waits for its turn. An
event that does not get one is handed back to the store, pending, with a note of why; it holds its
turn from then until it ends (waits for callbacks and timers included), and gives it up with one
write, which also wakes the next event of its key. A holder whose event ended without giving up its
turn (failed by the store at its size limit, removed by its TTL) is dropped when the key is full.
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
from datetime import timedelta
from typing import Any, Mapping

from machinery.language.expressions import ExpressionError, compile_expression
from machinery.store import EPOCH, utcnow

LOG = logging.getLogger(__name__)

RECHECK_S = 5.0  # when an event queued for its turn looks again if no event of its key woke it
KEY_TEXT = 200  # the most characters of a key's value kept


def event_fields(workflow: Mapping[str, Any], data: Mapping[str, Any]) -> dict:
    """The `concurrency` field of a new event of `workflow`: its key's value read from `data`; nothing
    for a workflow without `concurrency`."""
    setting = workflow.get("concurrency")
    if not setting:
        return {}
    try:
        value = compile_expression(setting["key"]).search(data)
    except ExpressionError:
        value = None  # an expression this data cannot take (a comparison of two types): the null key
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)
    if len(text) > KEY_TEXT:  # kept short, and told apart from other long ones by a digest of the whole
        text = text[:KEY_TEXT - 17] + "#" + hashlib.sha256(text.encode()).hexdigest()[:16]
    return {"concurrency": {"key": f"{workflow['workflow_id']}:{text}", "value": text,
                            "limit": int(setting["limit"]), "held": False}}


def take(store, event: dict, owner: str) -> dict | None:
    """Take the event's turn, if it needs one. Returns None when it may run (it holds its turn), or the
    event as handed back to the store, queued, when it may not."""
    setting = event.get("concurrency")
    if not setting or setting.get("held"):
        return None
    event_id, key, limit = event["event_id"], setting["key"], int(setting["limit"])
    ack_date = event["ack_date"]

    def decide(document):
        holders = (document or {}).get("holders") or {}
        if event_id in holders:
            return None, True
        gone = store.flow.ended_events(list(holders)) if len(holders) >= limit else []
        earlier = store.flow.earlier_waiting(key, ack_date, event_id, limit)
        if len(holders) - len(gone) + earlier >= limit:
            return None, False
        update = {"$set": {f"holders.{event_id}": ack_date}}
        if gone:
            update["$unset"] = {f"holders.{holder}": "" for holder in gone}
        return update, True

    granted, decided = store.flow.change(f"workflow:{key}", decide)
    if decided and granted:
        setting["held"] = True
        store.update_event(event_id, {"$set": {"concurrency.held": True}, "$unset": {"queued": ""}}, owner=owner)
        event.pop("queued", None)
        return None
    now = utcnow()
    due = now + timedelta(seconds=RECHECK_S * random.uniform(1.0, 1.2))
    previous = event.get("queued") or {}
    workflow = event.get("workflow_name") or "?"
    note = {"workflow": workflow, "why": "concurrency", "key": setting.get("value"),
            "message": f"queued: workflow {workflow} at concurrency {limit} for key {setting.get('value')}",
            "since": previous.get("since") or now, "until": due}
    fields = {"status": "pending", "queued": note, "updated_at": now, "lease_owner": None, "lease_expires": due,
              "claims_without_progress": 0}
    if not store.update_event(event_id, {"$set": fields}, owner=owner):
        LOG.warning("event %s: lease lost while queueing it for its turn", event_id)
        return {**event, "status": "running"}
    return {**event, **fields}


def give_up(store, event: Mapping[str, Any]) -> None:
    """The event ended: give up its turn, and wake the next event of its key."""
    setting = event.get("concurrency")
    if not setting or not setting.get("held"):
        return
    try:
        store.flow.release(f"workflow:{setting['key']}", event["event_id"])
        store.update_event(event["event_id"], {"$set": {"concurrency.held": False}})
        following = store.flow.next_waiting(setting["key"], int(setting["limit"]))
        for event_id in following:
            store.update_event(event_id, {"$set": {"lease_expires": EPOCH}}, expect={"status": "pending"})
    except Exception as error:  # the next event still looks again at its due time
        LOG.warning("event %s: its turn was not given up cleanly: %s", event.get("event_id"), error)

"""The flow collection: one document per limited service, holding its calls in flight (a lease per holder),
its token bucket and its circuit breaker, and one per concurrency key of a workflow (the events holding
it), each changed by compare-and-set on a revision.

A document::

    {"_id": <service name>, "rev": <int>,
     "holders": {<holder id>: <lease expiry>},        # the calls in flight, one entry per call
     "tokens": <float>, "tokens_at": <date>,          # the rate limit's bucket, as last taken from
     "breaker": {"state": "closed" | "open" | "half_open", "failures": <int>,
                 "opened_at": <date or null>, "trial": <holder id or null>, "trial_expires": <date or null>}}

What the runtime decides from a document it read is written only if the document is still at the
revision it read (`change`), so two processes never both take the last slot or the last token; a
release only removes its own holder, which can only free room, and needs no revision. Plain update
operators ($set, $unset, $inc) only, on one document: what MongoDB and the embedded store both do.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Callable, Iterable, Mapping

from bson import ObjectId
from pymongo.errors import DuplicateKeyError

from machinery.clock import naive_utc
from machinery.store.errors import serialised

FLOW = "flow"
ACTIVE = ("pending", "running", "waiting")
QUEUED_COUNTED = 10_000  # the queued events a metrics scrape counts at most
CHANGE_TRIES = 8  # compare-and-set rounds before a change is given up as contended


class FlowStore:
    """Each limited service's flow document: read it, change it by compare-and-set, release a holder."""

    def __init__(self, database, guard, events=None):
        self.collection = database[FLOW]
        self.events = events if events is not None else database["events"]
        self._guard = guard

    @serialised
    def state(self, name: str) -> dict | None:
        return self.collection.find_one({"_id": name})

    @serialised
    def states(self, names: Iterable[str] | None = None) -> dict[str, dict]:
        """The flow documents of `names` (every one when None), by service name."""
        query = {} if names is None else {"_id": {"$in": list(names)}}
        return {document["_id"]: document for document in self.collection.find(query)}

    @serialised
    def change(self, name: str, decide: Callable[[dict | None], tuple[Mapping[str, Any] | None, Any]],
               tries: int = CHANGE_TRIES) -> tuple[Any, bool]:
        """Read the service's document, let `decide` say what to write and what to answer, and write it
        only if nobody wrote in between (else read again, up to `tries` times).

        `decide(document or None)` returns (update, result): update None writes nothing; otherwise a
        {"$set": ..., "$unset": ...} made of plain operators. Returns (result, True) once decided, or
        (the last result, False) when every try met another writer."""
        result = None
        for _ in range(tries):
            document = self.collection.find_one({"_id": name})
            update, result = decide(document)
            if update is None:
                return result, True
            if document is None:
                try:
                    self.collection.insert_one({"_id": name, "rev": 1, **_inserted(update)})
                except DuplicateKeyError:
                    continue
                return result, True
            written = {key: value for key, value in update.items() if value}
            written["$inc"] = {"rev": 1}
            if self.collection.update_one({"_id": name, "rev": document.get("rev", 0)}, written).matched_count:
                return result, True
        return result, False

    @serialised
    def release(self, name: str, holder: str) -> None:
        """Give back a call's slot: removing one holder only frees room, so it needs no revision."""
        self.collection.update_one({"_id": name}, {"$unset": {f"holders.{holder}": ""}})  # gone already: a no-op

    @serialised
    def renew(self, name: str, holders: Iterable[str], expires: datetime) -> None:
        """Extend the leases of calls still in flight (a holder already dropped as expired stays dropped,
        so a renewal never takes a slot back), and of a trial call one of them makes."""
        holders = list(holders)
        for holder in holders:
            self.collection.update_one({"_id": name, f"holders.{holder}": {"$exists": True}},
                                       {"$set": {f"holders.{holder}": expires}})
        if holders:  # at most one of them makes the trial call
            self.collection.update_one({"_id": name, "breaker.trial": {"$in": holders}},
                                       {"$set": {"breaker.trial_expires": expires}})

    @serialised
    def forget(self, name: str) -> None:
        """A deleted service's document goes with it: a service registered later under its name starts
        with its own bucket and a closed breaker, not with what the old one left."""
        self.collection.delete_one({"_id": name})

    # -- a workflow's concurrency key (machinery.runtime.turns) -----------------------------------

    @serialised
    def ended_events(self, event_ids: list[str]) -> list[str]:
        """Which of these events are no longer active (ended, or gone)."""
        oids = [ObjectId(event_id) for event_id in event_ids if ObjectId.is_valid(event_id)]
        active = {str(document["_id"]) for document in
                  self.events.find({"_id": {"$in": oids}, "status": {"$in": list(ACTIVE)}}, {"_id": 1})}
        return [event_id for event_id in event_ids if event_id not in active]

    @serialised
    def earlier_waiting(self, key: str, ack_date: datetime, event_id: str, limit: int) -> int:
        """How many active events of `key` that came before this one wait for their turn (counted up to `limit`)."""
        ack_date = naive_utc(ack_date)
        return self.events.count_documents({
            "concurrency.key": key, "concurrency.held": False, "status": {"$in": list(ACTIVE)},
            "$or": [{"ack_date": {"$lt": ack_date}}, {"ack_date": ack_date, "_id": {"$lt": ObjectId(event_id)}}],
        }, limit=limit)

    @serialised
    def next_waiting(self, key: str, limit: int) -> list[str]:
        """The first events of `key`, in the order they came, that wait for their turn."""
        return [str(document["_id"]) for document in self.events.find(
            {"concurrency.key": key, "concurrency.held": False, "status": "pending"}, {"_id": 1}
        ).sort([("ack_date", 1), ("_id", 1)]).limit(limit)]

    @serialised
    def queued_events(self, limit: int = QUEUED_COUNTED) -> dict[tuple[str, str, str], int]:
        """The events queued now (a step held back by its service, or the event by its workflow's
        concurrency), counted by (service, workflow, why), one of the first two empty, up to `limit`
        events (through the `queued_notes` index: only queued events are in it)."""
        counts: dict[tuple[str, str, str], int] = {}
        for document in self.events.find({"queued.why": {"$exists": True}, "status": {"$in": list(ACTIVE)}},
                                         {"queued.service": 1, "queued.workflow": 1, "queued.why": 1}).limit(limit):
            queued = document.get("queued") or {}
            key = (str(queued.get("service") or ""), str(queued.get("workflow") or ""), str(queued.get("why")))
            counts[key] = counts.get(key, 0) + 1
        return counts


def _inserted(update: Mapping[str, Any]) -> dict:
    """The document a first write makes: its $set paths expanded (`holders.h1` into `holders: {h1}`)."""
    document: dict[str, Any] = {}
    for path, value in (update.get("$set") or {}).items():
        here = document
        *parents, last = path.split(".")
        for part in parents:
            here = here.setdefault(part, {})
        here[last] = value
    return document

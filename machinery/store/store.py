"""The only module that talks to MongoDB: collections, indexes, definitions, events, claims and leases."""

from __future__ import annotations

import functools
import logging
import threading
from contextlib import nullcontext
from datetime import UTC, datetime, timedelta
from typing import Any, Iterable, Mapping

import pymongo
from bson import ObjectId
from bson.errors import InvalidId
from pymongo import ReturnDocument
from pymongo.errors import DocumentTooLarge, DuplicateKeyError, OperationFailure, PyMongoError

from machinery.exceptions import Conflict, NotFound, StoreUnavailable, TooLarge
from machinery.store.embedded import embedded_events
from machinery.store.limits import LIMIT, MAX_DOCUMENT_BYTES, is_too_large

LOG = logging.getLogger(__name__)

SERVICES, WORKFLOWS, EVENTS = "services", "workflows", "events"
FINISHED = ("completed", "failed")
ACTIVE = ("pending", "running", "waiting")
EPOCH = datetime(1970, 1, 1)
CLAIMS_KEPT = 20  # an event keeps its last claims (who held it, when) and counts them all
UNCLAIMABLE_TRIES = 5  # events at the size limit a claim fails, and skips, before it gives up for now


def pending_webhook() -> dict:
    """An ended event's completion webhook, due now: what claim_webhook looks for."""
    return {"status": "pending", "attempts": [], "next_at": EPOCH}


def utcnow() -> datetime:
    """Now, as the naive UTC datetime both MongoDB and mongomock store without surprise: to the
    millisecond, as BSON keeps it, so a date answered before it is stored equals the stored one."""
    now = datetime.now(UTC)
    return now.replace(tzinfo=None, microsecond=now.microsecond // 1000 * 1000)


def _aware(value: Any) -> Any:
    """Make every datetime in a document timezone-aware UTC, recursively."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, dict):
        return {key: _aware(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_aware(item) for item in value]
    return value


def _object_id(ref: str) -> ObjectId | None:
    try:
        return ObjectId(ref)
    except (InvalidId, TypeError):
        return None


def _by_ref(ref: str) -> dict:
    """Query a definition by id or by name: a valid ObjectId may still be a name."""
    oid = _object_id(ref)
    return {"$or": [{"_id": oid}, {"name": ref}]} if oid else {"name": ref}


def _out(document: Mapping[str, Any] | None, id_field: str) -> dict | None:
    """A stored document as the plain dict the rest of the program sees: string id, aware dates."""
    if document is None:
        return None
    result = _aware(dict(document))
    result[id_field] = str(result.pop("_id"))
    return result


def _serialised(method):
    """Run a store method under the embedded store's lock (mongomock is not thread-safe)."""
    @functools.wraps(method)
    def wrapper(self, *args, **kwargs):
        with self._guard:
            try:
                return method(self, *args, **kwargs)
            except (DuplicateKeyError, NotFound, Conflict, TooLarge):
                raise
            except (OperationFailure, DocumentTooLarge) as error:
                if is_too_large(error):
                    raise TooLarge(f"MongoDB refused a write past {LIMIT}: {error}") from error
                raise StoreUnavailable(f"the store did not answer: {error.__class__.__name__}") from error
            except PyMongoError as error:
                raise StoreUnavailable(f"the store did not answer: {error.__class__.__name__}") from error
    return wrapper


class Store:
    """Definitions and events in one MongoDB database; returns plain dicts, raises domain errors."""

    def __init__(self, database, *, embedded: bool = False):
        self.db = database
        self.embedded = embedded
        self._guard = threading.RLock() if embedded else nullcontext()
        self.services = database[SERVICES]
        self.workflows = database[WORKFLOWS]
        self.events = embedded_events(database[EVENTS]) if embedded else database[EVENTS]
        self.writes = 0  # store writes made, for benchmarks and metrics
        self._service_writes = 0  # services registered, replaced or deleted through this Store
        # The embedded store's workflows, as last read, by the id or name they were asked by: every
        # event reads its workflow, and only this process writes them (put and delete empty it).
        self._workflows_read: dict[str, dict] = {}

    @classmethod
    def connect(cls, uri: str, timeout_ms: int = 2000) -> Store:
        """Open the store named by a URI; `mongomock://` is the embedded in-memory one."""
        if uri.startswith("mongomock://"):
            import mongomock

            client = mongomock.MongoClient("mongodb://" + uri[len("mongomock://"):])
            embedded = True
        else:
            client = pymongo.MongoClient(
                uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms,
                socketTimeoutMS=max(timeout_ms * 5, 10000), connect=False,
            )
            embedded = False
        try:
            database = client.get_default_database()
        except pymongo.errors.ConfigurationError:
            database = client["machinery"]
        return cls(database, embedded=embedded)

    # -- health and indexes -------------------------------------------------------------

    @_serialised
    def ping(self) -> None:
        if not self.embedded:
            self.db.client.admin.command("ping")

    @_serialised
    def ensure_indexes(self, event_ttl_days: float | None = None) -> None:
        """Create the indexes every query relies on; idempotent."""
        self.services.create_index("name", unique=True)
        self.workflows.create_index("name", unique=True)
        self.workflows.create_index("services")
        self.events.create_index([("workflow_id", 1), ("ack_date", -1)])
        self.events.create_index([("status", 1), ("ack_date", -1)])
        self.events.create_index([("ack_date", -1)])
        self.events.create_index([("status", 1), ("lease_expires", 1)])
        self.events.create_index(
            [("workflow_id", 1), ("idempotency_key", 1)], unique=True, name="idempotency",
            partialFilterExpression={"idempotency_key": {"$exists": True}},
        )
        self.events.create_index(
            "waiting.token_hash", name="callback_token",
            partialFilterExpression={"waiting.token_hash": {"$exists": True}},
        )
        self.events.create_index("spent_tokens")
        self.events.create_index(
            [("webhook.status", 1), ("webhook.next_at", 1)], name="webhooks",
            partialFilterExpression={"webhook.status": "pending"},
        )
        self._ensure_ttl(event_ttl_days)

    def _ensure_ttl(self, days: float | None) -> None:
        existing = {index["name"]: index for index in self.events.list_indexes()}
        name = "retention"
        if days is None:
            if name in existing:
                self.events.drop_index(name)
            return
        seconds = int(days * 86400)
        if name in existing and existing[name].get("expireAfterSeconds") != seconds:
            self.events.drop_index(name)
        self.events.create_index("finished_at", name=name, expireAfterSeconds=seconds)

    # -- definitions --------------------------------------------------------------------

    def _put(self, collection, definition: Mapping[str, Any], bump_version: bool) -> tuple[dict, bool]:
        now = utcnow()
        update: dict[str, Any] = {
            "$set": {**definition, "updated_at": now, "ack_date": now},
            "$setOnInsert": {"created_at": now},
        }
        if bump_version:
            update["$inc"] = {"version": 1}
        before = collection.find_one_and_update(
            {"name": definition["name"]}, update, upsert=True, return_document=ReturnDocument.BEFORE,
            projection={"_id": 1},
        )
        self.writes += 1
        after = collection.find_one({"name": definition["name"]})
        return after, before is None

    @_serialised
    def put_service(self, definition: Mapping[str, Any]) -> tuple[dict, bool]:
        """Register a service, or replace the one of that name; returns (service, created)."""
        document, created = self._put(self.services, definition, bump_version=False)
        self._service_writes += 1
        return _out(document, "service_id"), created

    @_serialised
    def get_service(self, ref: str) -> dict:
        document = self.services.find_one(_by_ref(ref))
        if document is None:
            raise NotFound(f"no service {ref!r}")
        return _out(document, "service_id")

    @_serialised
    def find_services(self, names: Iterable[str]) -> dict[str, dict]:
        """The registered services among `names`, by name."""
        return {doc["name"]: _out(doc, "service_id")
                for doc in self.services.find({"name": {"$in": list(set(names))}})}

    @_serialised
    def services_revision(self, names: Iterable[str]) -> tuple:
        """A token that changes whenever a service among `names` is registered, replaced or deleted:
        what a plan cache keys on. The embedded store is written by this process alone, so a count of
        its service writes serves; MongoDB may be written by any process, so there it is each
        service's id and updated_at, read with one projected query."""
        if self.embedded:
            return ("embedded", self._service_writes)
        return tuple(sorted((doc["name"], str(doc["_id"]), doc.get("updated_at")) for doc in
                            self.services.find({"name": {"$in": list(set(names))}}, {"name": 1, "updated_at": 1})))

    @_serialised
    def list_services(self, page: int, page_size: int) -> tuple[list[dict], int]:
        return self._page(self.services, {}, [("name", 1)], page, page_size, "service_id")

    @_serialised
    def workflows_using(self, service_name: str) -> list[dict]:
        return [_out(doc, "workflow_id") for doc in self.workflows.find({"services": service_name}).sort("name", 1)]

    @_serialised
    def delete_service(self, ref: str) -> dict:
        """Delete a service; Conflict naming the workflows that use it."""
        service = self.get_service(ref)
        users = [workflow["name"] for workflow in self.workflows_using(service["name"])]
        if users:
            raise Conflict(
                f"service {service['name']!r} is used by workflow{'s' if len(users) > 1 else ''} "
                f"{', '.join(users)}; delete or change {'them' if len(users) > 1 else 'it'} first",
                errors={"workflows": users},
            )
        self._service_writes += 1
        self.services.delete_one({"_id": ObjectId(service["service_id"])})
        self.writes += 1
        return service

    @_serialised
    def put_workflow(self, definition: Mapping[str, Any]) -> tuple[dict, bool]:
        """Register a workflow, or replace the one of that name and bump its version."""
        self._workflows_read.clear()
        document, created = self._put(self.workflows, definition, bump_version=True)
        return _out(document, "workflow_id"), created

    @_serialised
    def get_workflow(self, ref: str) -> dict:
        """A workflow by id or name (the caller reads it, never changes it)."""
        known = self._workflows_read.get(ref)
        if known is not None:
            return dict(known)
        document = self.workflows.find_one(_by_ref(ref))
        if document is None:
            raise NotFound(f"no workflow {ref!r}")
        workflow = _out(document, "workflow_id")
        if self.embedded and len(self._workflows_read) < 1024:
            self._workflows_read[ref] = workflow
        return dict(workflow)

    @_serialised
    def list_workflows(self, page: int, page_size: int) -> tuple[list[dict], int]:
        return self._page(self.workflows, {}, [("name", 1)], page, page_size, "workflow_id")

    @_serialised
    def delete_workflow(self, ref: str) -> dict:
        workflow = self.get_workflow(ref)
        self._workflows_read.clear()
        self.workflows.delete_one({"_id": ObjectId(workflow["workflow_id"])})
        self.writes += 1
        return workflow

    def _page(self, collection, query, sort, page, page_size, id_field) -> tuple[list[dict], int]:
        total = collection.count_documents(query)
        cursor = collection.find(query).sort(sort).skip((page - 1) * page_size).limit(page_size)
        return [_out(doc, id_field) for doc in cursor], total

    # -- events -------------------------------------------------------------------------

    @_serialised
    def insert_event(self, event: dict) -> tuple[dict, bool]:
        """Insert a new event; with an idempotency key already used, return (the first event, False)."""
        document = dict(event)
        document.setdefault("_id", ObjectId())
        try:
            self.events.insert_one(document)
        except DuplicateKeyError:
            first = self.events.find_one({"workflow_id": event["workflow_id"],
                                          "idempotency_key": event["idempotency_key"]})
            if first is None:  # the clash was on something else
                raise
            return _out(first, "event_id"), False
        except (OperationFailure, DocumentTooLarge) as error:
            if not is_too_large(error):
                raise
            raise TooLarge(f"the event is too large to store: its record would pass {LIMIT} (the data is kept "
                           "twice, as sent and as the context the steps read)",
                           errors={"data": ["too large to store: keep it well under 8 MiB"]}) from error
        self.writes += 1
        # The caller's own event, not a copy read back: only its top-level dates need a time zone.
        inserted = {key: _aware(value) if isinstance(value, datetime) else value for key, value in document.items()}
        inserted["event_id"] = str(inserted.pop("_id"))
        return inserted, True

    @_serialised
    def get_event(self, event_id: str) -> dict:
        oid = _object_id(event_id)
        document = self.events.find_one({"_id": oid}) if oid else None
        if document is None:
            raise NotFound(f"no event {event_id!r}")
        return _out(document, "event_id")

    @_serialised
    def list_events(self, page: int, page_size: int, workflow_id: str | None = None,
                    status: str | None = None) -> tuple[list[dict], int]:
        query: dict[str, Any] = {}
        if workflow_id:
            query["workflow_id"] = workflow_id
        if status:
            query["status"] = status
        total = self.events.count_documents(query)
        # The page's ids first, then only those events: an index walk and an _id lookup on MongoDB,
        # and the embedded store copies one page of events instead of every one that matches.
        ids = [doc["_id"] for doc in self.events.find(query, {"_id": 1})
               .sort([("ack_date", -1), ("_id", -1)]).skip((page - 1) * page_size).limit(page_size)]
        found = {doc["_id"]: doc for doc in self.events.find({"_id": {"$in": ids}}, {"plan": 0, "context": 0})}
        return [_out(found[oid], "event_id") for oid in ids if oid in found], total

    @_serialised
    def count_events(self, status: str) -> int:
        return self.events.count_documents({"status": status})

    @_serialised
    def update_event(self, event_id: str, update: Mapping[str, Any], owner: str | None = None,
                     expect: Mapping[str, Any] | None = None) -> bool:
        """Apply one atomic update to an event, held by `owner` when given; False when it is not."""
        query: dict[str, Any] = {"_id": ObjectId(event_id)}
        if owner is not None:
            query["lease_owner"] = owner
        query.update(expect or {})
        result = self.events.update_one(query, update)
        self.writes += 1
        return result.matched_count == 1

    @_serialised
    def claim_event(self, owner: str, lease_s: float, event_id: str | None = None) -> dict | None:
        """Atomically take one event to work on: pending, a running one whose lease expired,
        or a waiting one whose callback deadline passed (so its step can be failed); only the
        event `event_id` when it is given (and only if it is claimable).

        The claim is recorded (the last CLAIMS_KEPT in `claims`, all counted in `claim_count`) and
        counted in `claims_without_progress`, which every step that ends sets back to 0. An event
        so near MongoDB's size limit that even that record does not fit is failed (`too_large`)
        and the claim goes on to the next one, so that it never stops every claim at itself."""
        for _ in range(UNCLAIMABLE_TRIES):
            now = utcnow()
            query: dict[str, Any] = {"status": {"$in": list(ACTIVE)}, "lease_expires": {"$lte": now}}
            if event_id is not None:
                query["_id"] = ObjectId(event_id)
            try:
                document = self.events.find_one_and_update(
                    query,
                    {"$set": {"status": "running", "lease_owner": owner,
                              "lease_expires": now + timedelta(seconds=lease_s)},
                     "$push": {"claims": {"$each": [{"owner": owner, "at": now}], "$slice": -CLAIMS_KEPT}},
                     "$inc": {"claim_count": 1, "claims_without_progress": 1}},
                    sort=[("lease_expires", 1)],
                    return_document=ReturnDocument.AFTER,
                )
            except (OperationFailure, DocumentTooLarge) as error:
                if not is_too_large(error):
                    raise
                self._fail_unclaimable(query, error)
                continue
            if document is not None:
                self.writes += 1
            return _out(document, "event_id")
        return None

    def _fail_unclaimable(self, query: Mapping[str, Any], error: Exception) -> None:
        """Fail the event a claim could not write to because of its size (the one it would take)."""
        found = self.events.find_one(query, {"_id": 1, "next_step": 1}, sort=[("lease_expires", 1)])
        if found is None:
            return
        LOG.error("event %s: even a claim would take its record past %s; failing it", found["_id"], LIMIT)
        self._fail_too_large(found["_id"], {
            "kind": "too_large", "step": found.get("next_step"), "limit_bytes": MAX_DOCUMENT_BYTES,
            "message": f"the event's record is at {LIMIT}: not even a claim fits in it any more, so the "
                       f"event failed for good (MongoDB: {error})"}, query)

    @_serialised
    def fail_too_large(self, event_id: str, error: Mapping[str, Any], owner: str | None = None,
                       expect: Mapping[str, Any] | None = None) -> bool:
        """Fail an event whose record is at MongoDB's size limit, with writes that make it smaller:
        the error set and the context (rebuilt from the steps when it is read) dropped; failing
        that, only the status and the lease. False when the event is not held by `owner` or does
        not match `expect`."""
        query: dict[str, Any] = {"_id": ObjectId(event_id), **(expect or {})}
        if owner is not None:
            query["lease_owner"] = owner
        return self._fail_too_large(query["_id"], error, query)

    def _fail_too_large(self, oid: ObjectId, error: Mapping[str, Any], query: Mapping[str, Any]) -> bool:
        query = {**query, "_id": oid}
        now = utcnow()
        callback = self.events.find_one(query, {"callback_url": 1})
        if callback is None:
            return False
        fields = {"status": "failed", "error": dict(error), "lease_owner": None, "lease_expires": EPOCH,
                  "finished_at": now, "updated_at": now, "context_dropped": True}
        if callback.get("callback_url"):
            fields["webhook"] = pending_webhook()
        for update in ({"$set": fields, "$unset": {"context": "", "waiting": ""}},
                       {"$set": {"status": "failed", "lease_owner": None},
                        "$unset": {"context": "", "waiting": "", "error": "", "outputs": ""}}):
            try:
                result = self.events.update_one(query, update)
            except (OperationFailure, DocumentTooLarge) as refused:
                if not is_too_large(refused):
                    raise
                continue
            self.writes += 1
            return result.matched_count == 1
        LOG.error("event %s: could not be failed, not even with a write that makes it smaller", oid)
        return False

    @_serialised
    def claim_webhook(self, owner: str, lease_s: float) -> dict | None:
        """Atomically take one ended event whose completion webhook is due. An event whose record
        has no room left for the claim has its webhook failed, and the claim goes on to the next."""
        for _ in range(UNCLAIMABLE_TRIES):
            now = utcnow()
            query = {"webhook.status": "pending", "webhook.next_at": {"$lte": now}}
            try:
                document = self.events.find_one_and_update(
                    query,
                    {"$set": {"webhook.owner": owner, "webhook.next_at": now + timedelta(seconds=lease_s)}},
                    sort=[("webhook.next_at", 1)],
                    return_document=ReturnDocument.AFTER,
                )
            except (OperationFailure, DocumentTooLarge) as error:
                if not is_too_large(error):
                    raise
                self._end_webhook_too_large(query)
                continue
            if document is not None:
                self.writes += 1
            return _out(document, "event_id")
        return None

    def _end_webhook_too_large(self, query: Mapping[str, Any]) -> bool:
        """Give up the webhook of an event (the first `query` finds) whose record has no room left to
        note a delivery: set failed with a write that makes the record smaller."""
        found = self.events.find_one(query, {"_id": 1}, sort=[("webhook.next_at", 1)])
        if found is None:
            return False
        LOG.error("event %s: its record is at %s; its completion webhook is given up", found["_id"], LIMIT)
        result = self.events.update_one({**query, "_id": found["_id"]}, {"$set": {
            "webhook.status": "failed", "webhook.next_at": None, "webhook.owner": None}})
        self.writes += 1
        return result.matched_count == 1

    @_serialised
    def renew_leases(self, owner: str, event_ids: Iterable[str], lease_s: float) -> int:
        ids = [ObjectId(event_id) for event_id in event_ids]
        if not ids:
            return 0
        result = self.events.update_many(
            {"_id": {"$in": ids}, "lease_owner": owner},
            {"$set": {"lease_expires": utcnow() + timedelta(seconds=lease_s)}},
        )
        self.writes += 1
        return result.modified_count

    @_serialised
    def release_event(self, event_id: str, owner: str) -> bool:
        """Give a running event back so another worker resumes it at once."""
        return self.update_event(
            event_id, {"$set": {"status": "pending", "lease_owner": None, "lease_expires": EPOCH}},
            owner=owner, expect={"status": "running"},
        )

    @_serialised
    def find_by_callback(self, token_hash: str) -> tuple[dict | None, bool]:
        """The event waiting on a callback token, and whether the token was already spent."""
        document = self.events.find_one({"waiting.token_hash": token_hash})
        if document is not None:
            return _out(document, "event_id"), False
        spent = self.events.find_one({"spent_tokens": token_hash}, {"_id": 1})
        return None, spent is not None

    @_serialised
    def pending_events_by_status(self) -> dict[str, int]:
        return {status: self.events.count_documents({"status": status}) for status in ACTIVE}

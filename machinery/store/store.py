"""The only module that talks to MongoDB: collections, indexes, definitions, events, claims and leases."""

from __future__ import annotations

import base64
import binascii
import functools
import logging
import os
import random
import socket
import threading
import time
from contextlib import contextmanager, nullcontext
from datetime import UTC, datetime, timedelta
from typing import Any, Iterable, Iterator, Mapping

import bson
import pymongo
from bson import ObjectId
from bson.codec_options import TypeDecoder, TypeRegistry
from bson.errors import InvalidId
from bson.int64 import Int64
from pymongo import ReturnDocument
from pymongo.errors import (
    DocumentTooLarge,
    DuplicateKeyError,
    OperationFailure,
    PyMongoError,
)

from machinery.clock import EPOCH, naive_utc, utcnow
from machinery.config import DEFAULT_OFFLOAD_BYTES
from machinery.exceptions import (
    Conflict,
    InvalidData,
    MachineryError,
    NotFound,
    StoreRefused,
    StoreUnavailable,
    TooLarge,
)
from machinery.language.plan import children_of
from machinery.rollups import RETAIN_S as ROLLUP_RETAIN_S
from machinery.store.bulk_jobs import BulkJobs
from machinery.store.embedded import embedded_events
from machinery.store.embedded_steps import embedded_step_runs
from machinery.store.errors import serialised, server_message, store_error
from machinery.store.event_filters import ATTR_INDEX, ATTR_KEYS, attr_query
from machinery.store.flow import FlowStore
from machinery.store.limits import LIMIT, MAX_DOCUMENT_BYTES, is_too_large
from machinery.store.secrets import SecretStore
from machinery.store.values import ValueStore

LOG = logging.getLogger(__name__)


class _Int64AsInt(TypeDecoder):
    """MongoDB answers a whole number past 32 bits as bson's Int64, an int subclass that JMESPath's
    functions (max, sum, sort, abs, ...) refuse as not a number and exact type tests miss: every read
    answers a plain int instead, as the embedded store does. Such an int is still written as an int64."""

    bson_type = Int64

    def transform_bson(self, value: Int64) -> int:
        return int(value)


PLAIN_INTS = TypeRegistry([_Int64AsInt()])

SERVICES, WORKFLOWS, EVENTS, LOCKS, STEP_RUNS = "services", "workflows", "events", "locks", "step_runs"
ROLLUPS = "rollups"  # the dashboard's five-minute buckets (machinery/rollups.py)
SCHEDULES = "schedules"
FINISHED = ("completed", "failed", "cancelled")
ACTIVE = ("pending", "running", "waiting")
HELD = datetime(9999, 1, 1)  # the lease_expires of a pending event no claim takes (its workflow is paused)
CLAIMS_KEPT = 20  # an event keeps its last claims (who held it, when) and counts them all
UNCLAIMABLE_TRIES = 5  # events at the size limit a claim fails, and skips, before it gives up for now


def pending_webhook() -> dict:
    """An ended event's completion webhook, due now: what claim_webhook looks for."""
    return {"status": "pending", "attempts": [], "next_at": EPOCH}


def _aware(value: Any) -> Any:
    """Make every datetime in a document timezone-aware UTC, recursively."""
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    if isinstance(value, dict):
        return {key: _aware(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_aware(item) for item in value]
    return value


def due_schedules(now: datetime) -> dict:
    """The query of the schedules whose tick is due at `now` and that no process holds."""
    return {"paused": False, "next_run": {"$lte": now}, "lease_expires": {"$lte": now}}


def _naive(value: Any) -> Any:
    """Every aware datetime in a document as the naive UTC one the store keeps, recursively."""
    if isinstance(value, datetime):
        return naive_utc(value)
    if isinstance(value, dict):
        return {key: _naive(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_naive(item) for item in value]
    return value


def _object_id(ref: str) -> ObjectId | None:
    """The ObjectId a reference spells, None when it spells none. An event's id is parsed at each of
    its writes and status reads (a map item reads the status before its call), so strings are parsed
    once each, for the last few thousand."""
    if type(ref) is str:
        return _parsed_id(ref)
    try:
        return ObjectId(ref)
    except (InvalidId, TypeError):
        return None


@functools.lru_cache(maxsize=4096)
def _parsed_id(ref: str) -> ObjectId | None:
    try:
        return ObjectId(ref)
    except InvalidId:
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


# -- indexes ------------------------------------------------------------------------------

NEWEST_FIRST = [("ack_date", -1), ("_id", -1)]
# One index per list_events filter, each ending in the list's order (ack_date, _id), so that every
# page is a walk of its own index, covered (the ids and dates are read from the index alone), with
# no SORT stage: unfiltered, by workflow, by status, by both. Named, so that a deployment can tell.
LIST_INDEXES = {
    "events_newest": [*NEWEST_FIRST],
    "events_by_workflow": [("workflow_id", 1), *NEWEST_FIRST],
    "events_by_status": [("status", 1), *NEWEST_FIRST],
    "events_by_workflow_status": [("workflow_id", 1), ("status", 1), *NEWEST_FIRST],
}
# What the list indexes replace (each a prefix of one of them): dropped when found.
SUPERSEDED_INDEXES = ("workflow_id_1_ack_date_-1", "status_1_ack_date_-1", "ack_date_-1")
# The trees that run a child workflow, by its name: `workflows` (the children a tree's steps run, written
# at registration), indexed over trees only, so that the trees stored before that field was written are
# under its null key, and no version 1 workflow (which runs none) is.
RUNNING_INDEX = "workflows_running"
TREES = {"steps": {"$exists": True}}
RETENTION_INDEX = "retention"
MAX_EXPIRE_AFTER_S = 2**31 - 1  # MongoDB accepts expireAfterSeconds from 0 to this
INDEX_BUILD_TIMEOUT_S = 300.0  # what the API gives an index build; `machinery init-db` waits as long as it takes
INDEX_NOT_FOUND = 27

# The due schedules, soonest first: what every worker's look for a tick to fire walks (claim_schedule).
SCHEDULES_DUE = [("paused", 1), ("next_run", 1)]
SCHEDULE_TICKS_KEPT = 10  # a schedule keeps its last ticks (fired, skipped, missed, failed)

# -- paging -------------------------------------------------------------------------------

COUNT_LIMIT = 10_000  # a filtered total is counted up to this, then reported as a lower bound
MAX_PAGE_OFFSET = 10_000  # ?page skips at most this many events; past it, the cursor walks on

# -- the registry lock --------------------------------------------------------------------

REGISTRY_LOCK_S = 30.0  # a lock a crashed process left is taken over after this
REGISTRY_WAIT_S = 10.0  # how long a registration waits for another to finish


def encode_cursor(ack_date: datetime, oid: ObjectId) -> str:
    """The opaque token of a position in the newest-first list: the last event's ack_date and id."""
    millis = int(ack_date.replace(tzinfo=UTC).timestamp() * 1000) if ack_date.tzinfo is None else \
        int(ack_date.timestamp() * 1000)
    return base64.urlsafe_b64encode(f"1:{millis}:{oid}".encode()).decode().rstrip("=")


def decode_cursor(token: str) -> tuple[datetime, ObjectId]:
    """A cursor's position; InvalidData (422, naming `cursor`) for anything this API did not give."""
    try:
        raw = base64.urlsafe_b64decode(token + "=" * (-len(token) % 4)).decode()
        version, millis, oid = raw.split(":")
        if version != "1" or not millis.isdigit() or len(millis) > 15:
            raise ValueError(raw)
        when = EPOCH + timedelta(milliseconds=int(millis))
        return when, ObjectId(oid)
    except (ValueError, binascii.Error, UnicodeDecodeError, InvalidId, TypeError, OverflowError):
        raise InvalidData("cursor is not one this API gave: pass the next_cursor of a page as it is",
                          errors={"cursor": ["not a cursor this API gave"]}) from None


class Store:
    """Definitions and events in one MongoDB database; returns plain dicts, raises domain errors."""

    def __init__(self, database, *, embedded: bool = False):
        self.db = database
        self.embedded = embedded
        self._guard = threading.RLock() if embedded else nullcontext()
        self.services = database[SERVICES]
        self.workflows = database[WORKFLOWS]
        self.events = embedded_events(database[EVENTS]) if embedded else database[EVENTS]
        self.secrets = SecretStore(database, self._guard, embedded=embedded)
        self.flow = FlowStore(database, self._guard, self.events)  # limited services' slots, buckets and breakers
        self.bulk_jobs = BulkJobs(self)
        self.values = ValueStore(database, self._guard, embedded=embedded)  # large values (runtime.payloads)
        self.offload_bytes = DEFAULT_OFFLOAD_BYTES  # MACHINERY_OFFLOAD_BYTES, set by whoever reads the config
        # Tests set MACHINERY_TEST_EVENT_MAX_BYTES: every event write then checks the document's size.
        self.check_event_bytes = int(os.environ.get("MACHINERY_TEST_EVENT_MAX_BYTES") or 0)
        self.locks = database[LOCKS]
        self.step_runs = embedded_step_runs(database[STEP_RUNS]) if embedded else database[STEP_RUNS]
        self.rollups = database[ROLLUPS]
        self.schedules = database[SCHEDULES]
        self.clock_skew_s: float | None = None  # this host's clock minus the server's, once checked
        self._build_timeout_s: float | None = INDEX_BUILD_TIMEOUT_S  # what ensure_indexes gives a build
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
            # timeoutMS bounds every operation (server selection, connection checkout, the server's own
            # work, through the maxTimeMS pymongo sends), so a slow server answers 503 in bounded time;
            # with it set, pymongo takes no socketTimeoutMS. Index builds get their own (ensure_indexes).
            client = pymongo.MongoClient(
                uri, serverSelectionTimeoutMS=timeout_ms, connectTimeoutMS=timeout_ms,
                timeoutMS=timeout_ms, connect=False, type_registry=PLAIN_INTS,
            )
            embedded = False
        try:
            database = client.get_default_database()
        except pymongo.errors.ConfigurationError:
            database = client["machinery"]
        return cls(database, embedded=embedded)

    def close(self) -> None:
        """End the client of a real MongoDB now (its monitor threads, pooled connections and server
        sessions) rather than whenever the collector finds it. Nothing may use the store after: pymongo
        refuses a closed client. The embedded store holds nothing to end."""
        if not self.embedded:
            self.db.client.close()

    # -- health and indexes -------------------------------------------------------------

    @serialised
    def ping(self) -> None:
        if not self.embedded:
            self.db.client.admin.command("ping")

    @serialised
    def ensure_indexes(self, event_ttl_days: float | None = None,
                       build_timeout_s: float | None = INDEX_BUILD_TIMEOUT_S) -> None:
        """Create the indexes every query relies on; idempotent, and safe with several processes
        starting at once. An index MongoDB refuses (one that conflicts with an existing one, duplicate
        names under a unique one, a TTL out of range) raises StoreRefused naming it.

        Each build may take up to `build_timeout_s` (None: as long as it takes), not the operation
        timeout: a build on a large collection takes longer, and the server would abort it."""
        if not self.embedded:
            self.db.client.admin.command("ping")  # under the operation timeout: an absent server fails fast
        self._build_timeout_s = build_timeout_s
        index = self._create_index
        index(self.services, [("name", 1)], unique=True)
        index(self.workflows, [("name", 1)], unique=True)
        index(self.workflows, [("services", 1)])
        index(self.workflows, [("workflows", 1)], name=RUNNING_INDEX, partialFilterExpression=TREES)
        for name, keys in LIST_INDEXES.items():
            index(self.events, keys, name=name)
        index(self.events, ATTR_KEYS, name=ATTR_INDEX)
        self.bulk_jobs.ensure_indexes(index)
        index(self.events, [("status", 1), ("lease_expires", 1)])
        index(self.events, [("workflow_id", 1), ("idempotency_key", 1)], unique=True, name="idempotency",
              partialFilterExpression={"idempotency_key": {"$exists": True}})
        index(self.events, [("waiting.token_hash", 1)], name="callback_token",
              partialFilterExpression={"waiting.token_hash": {"$exists": True}})
        index(self.events, [("spent_tokens", 1)])
        index(self.events, [("concurrency.key", 1), ("ack_date", 1)], name="concurrency",
              partialFilterExpression={"concurrency.key": {"$exists": True}})
        index(self.events, [("queued.why", 1)], name="queued_notes",
              partialFilterExpression={"queued.why": {"$exists": True}})
        index(self.events, [("webhook.status", 1), ("webhook.next_at", 1)], name="webhooks",
              partialFilterExpression={"webhook.status": "pending"})
        for name in SUPERSEDED_INDEXES:
            self._drop_index(self.events, name)
        index(self.schedules, [("name", 1)], unique=True)
        index(self.schedules, SCHEDULES_DUE, name="schedules_due")
        index(self.step_runs, [("event_id", 1), ("run", 1), ("instance", 1)], unique=True, name="step_run")
        index(self.step_runs, [("event_id", 1), ("node", 1), ("item", 1)], name="step_runs_by_node")
        index(self.step_runs, [("token_hash", 1)], name="step_run_token",
              partialFilterExpression={"token_hash": {"$exists": True}})
        index(self.rollups, [("bucket", 1)], name="rollups_expiry", expireAfterSeconds=ROLLUP_RETAIN_S)
        self.values.ensure_indexes(index)
        self._ensure_ttl(event_ttl_days)
        self._ensure_step_runs_ttl(event_ttl_days)

    def _create_index(self, collection, keys: list, **options) -> None:
        """One createIndexes, its refusal named: which index, on which collection, and why."""
        name = options.setdefault("name", "_".join(f"{field}_{order}" for field, order in keys))
        doing = f"index {name!r} on {collection.name}"
        try:
            self._raw_create_index(collection, keys, options)
        except DuplicateKeyError as error:
            fields = ", ".join(field for field, _ in keys)
            raise StoreRefused(
                f"{doing} cannot be made: two or more {collection.name} share one {fields} "
                f"({server_message(error)}); rename or delete the duplicates, then restart or run "
                f"`machinery init-db`", code=11000, code_name="DuplicateKey") from error
        except PyMongoError as error:
            raise store_error(error, f"{doing} cannot be made") from error

    def _raw_create_index(self, collection, keys: list, options: dict) -> None:
        """createIndexes, unless the very index is there already (then nothing is sent: a start costs
        one listIndexes per index). Only a build gets the build timeout, not the operation one."""
        for index in collection.list_indexes():
            if index["name"] == options["name"]:
                if list(dict(index["key"]).items()) == list(keys) and _identity(index) == _identity(options):
                    return
                break
        if self.embedded:
            _refuse_as_mongodb(collection, keys, options)
        with pymongo.timeout(self._build_timeout_s or 0):  # 0: no deadline
            collection.create_index(keys, **options)

    @staticmethod
    def _drop_index(collection, name: str) -> None:
        """Drop an index if it is there; one another process dropped meanwhile is no error."""
        if name not in {index["name"] for index in collection.list_indexes()}:
            return
        try:
            collection.drop_index(name)
        except OperationFailure as error:
            if error.code != INDEX_NOT_FOUND:
                raise

    def _ensure_step_runs_ttl(self, days: float | None) -> None:
        """The step records' TTL: on ack_date (the event's), with the events' expiry."""
        if days is None:
            self._drop_index(self.step_runs, RETENTION_INDEX)
            return
        seconds = int(days * 86400)
        existing = {index["name"]: index for index in self.step_runs.list_indexes()}.get(RETENTION_INDEX)
        if existing is not None and existing.get("expireAfterSeconds") == seconds:
            return
        try:
            if existing is None:
                self._raw_create_index(self.step_runs, [("ack_date", 1)],
                                       {"name": RETENTION_INDEX, "expireAfterSeconds": seconds})
            elif self.embedded:
                self.step_runs.drop_index(RETENTION_INDEX)
                self.step_runs.create_index([("ack_date", 1)], name=RETENTION_INDEX, expireAfterSeconds=seconds)
            else:
                self.db.command("collMod", STEP_RUNS, index={"name": RETENTION_INDEX, "expireAfterSeconds": seconds})
        except OperationFailure as error:
            if error.code not in (85, 86):  # another process made it meanwhile
                raise store_error(error, f"index {RETENTION_INDEX!r} on step_runs cannot be made") from error

    def _ensure_ttl(self, days: float | None) -> None:
        """The retention TTL index on finished_at, its expiry changed in place (collMod), never rebuilt:
        a rebuild of a large collection outlasts any timeout. Processes starting at once all end with
        the same index, whichever of them creates it or changes it first."""
        if days is None:
            self._drop_index(self.events, RETENTION_INDEX)
            return
        seconds = int(days * 86400)
        for _ in range(3):
            existing = {index["name"]: index for index in self.events.list_indexes()}.get(RETENTION_INDEX)
            if existing is None:
                try:
                    self._raw_create_index(self.events, [("finished_at", 1)],
                                           {"name": RETENTION_INDEX, "expireAfterSeconds": seconds})
                    return
                except OperationFailure as error:
                    if error.code not in (85, 86):
                        raise store_error(error, f"index {RETENTION_INDEX!r} on events cannot be made") from error
                    continue  # another process made it meanwhile, perhaps with another expiry: look again
            if existing.get("expireAfterSeconds") == seconds:
                return
            self._set_expiry(RETENTION_INDEX, seconds)
            return
        raise StoreRefused(f"index {RETENTION_INDEX!r} on events keeps changing under this process; "
                           "is another one running with another MACHINERY_EVENT_TTL_DAYS?")

    def _set_expiry(self, name: str, seconds: int) -> None:
        doing = f"the expiry of index {name!r} on events cannot be changed"
        try:
            if self.embedded:
                # mongomock has no collMod; its in-memory index is rebuilt at no cost.
                _refuse_expiry(seconds)
                self.events.drop_index(name)
                self.events.create_index([("finished_at", 1)], name=name, expireAfterSeconds=seconds)
            else:
                self.db.command("collMod", EVENTS, index={"name": name, "expireAfterSeconds": seconds})
        except PyMongoError as error:
            raise store_error(error, doing) from error

    # -- clocks -----------------------------------------------------------------------------

    @serialised
    def check_clock(self, tolerance_s: float) -> float | None:
        """This host's clock minus the server's (from `hello`'s localTime, halfway through the round
        trip), checked once per Store; a warning when it is off by more than `tolerance_s`, since lease
        times are this host's clock compared with other hosts'. The embedded store has one clock."""
        if self.embedded:
            return 0.0
        if self.clock_skew_s is not None:
            return self.clock_skew_s
        sent = time.time()
        reply = self.db.client.admin.command("hello")
        received = time.time()
        server = reply.get("localTime")
        if not isinstance(server, datetime):
            return None
        server_s = (server if server.tzinfo else server.replace(tzinfo=UTC)).timestamp()
        self.clock_skew_s = (sent + received) / 2 - server_s
        if abs(self.clock_skew_s) > tolerance_s + (received - sent) / 2:
            LOG.warning("this host's clock is %.1f s %s MongoDB's, more than the %.1f s leases tolerate: "
                        "sync it (NTP), or events may be claimed while another process still runs them",
                        abs(self.clock_skew_s), "ahead of" if self.clock_skew_s > 0 else "behind", tolerance_s)
        return self.clock_skew_s

    # -- the registry lock -------------------------------------------------------------------

    @contextmanager
    def registry_lock(self, wait_s: float = REGISTRY_WAIT_S) -> Iterator[None]:
        """Hold the registry while checking and writing definitions, so that no other process changes
        them in between (a service deleted while a workflow naming it is registered). On MongoDB it is
        one document in `locks`, taken by one atomic upsert, held by an owner until an expiry (a crashed
        process leaks nothing past REGISTRY_LOCK_S); the embedded store is one process: its lock serves."""
        if self.embedded:
            with self._guard:
                yield
            return
        owner = f"{socket.gethostname()}:{os.getpid()}:{threading.get_ident()}:{ObjectId()}"
        deadline = time.monotonic() + wait_s
        pause = 0.005
        while not self._take_registry(owner):
            if time.monotonic() > deadline:
                raise StoreUnavailable("the registry is held by another change for too long")
            time.sleep(pause * random.uniform(0.5, 1.5))
            pause = min(pause * 2, 0.2)
        try:
            yield
        finally:
            try:
                self._release_registry(owner)
            except MachineryError as error:  # it expires by itself
                LOG.warning("registry lock not released: %s", error.message)

    @serialised
    def _take_registry(self, owner: str) -> bool:
        now = utcnow()
        try:
            self.locks.find_one_and_update(
                {"_id": "registry", "expires": {"$lte": now}},
                {"$set": {"owner": owner, "expires": now + timedelta(seconds=REGISTRY_LOCK_S), "taken_at": now}},
                upsert=True, projection={"_id": 1},
            )
        except DuplicateKeyError:  # held: the upsert found no expired lock and clashed with the held one
            return False
        return True

    @serialised
    def _release_registry(self, owner: str) -> None:
        self.locks.delete_one({"_id": "registry", "owner": owner})

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

    @serialised
    def put_service(self, definition: Mapping[str, Any]) -> tuple[dict, bool]:
        """Register a service, or replace the one of that name; returns (service, created)."""
        document, created = self._put(self.services, definition, bump_version=False)
        self._service_writes += 1
        return _out(document, "service_id"), created

    @serialised
    def get_service(self, ref: str) -> dict:
        document = self.services.find_one(_by_ref(ref))
        if document is None:
            raise NotFound(f"no service {ref!r}")
        return _out(document, "service_id")

    @serialised
    def find_services(self, names: Iterable[str]) -> dict[str, dict]:
        """The registered services among `names`, by name."""
        return {doc["name"]: _out(doc, "service_id")
                for doc in self.services.find({"name": {"$in": list(set(names))}})}

    @serialised
    def services_revision(self, names: Iterable[str]) -> tuple:
        """A token that changes whenever a service among `names` is registered, replaced or deleted:
        what a plan cache keys on. The embedded store is written by this process alone, so a count of
        its service writes serves; MongoDB may be written by any process, so there it is each
        service's id and updated_at, read with one projected query."""
        if self.embedded:
            return ("embedded", self._service_writes)
        return tuple(sorted((doc["name"], str(doc["_id"]), doc.get("updated_at")) for doc in
                            self.services.find({"name": {"$in": list(set(names))}}, {"name": 1, "updated_at": 1})))

    @serialised
    def list_services(self, page: int, page_size: int) -> tuple[list[dict], int]:
        return self._page(self.services, {}, [("name", 1)], page, page_size, "service_id")

    @serialised
    def workflows_using(self, service_name: str) -> list[dict]:
        return [_out(doc, "workflow_id") for doc in self.workflows.find({"services": service_name}).sort("name", 1)]

    def delete_service(self, ref: str) -> dict:
        """Delete a service; Conflict naming the workflows that use it. The check and the delete hold
        the registry lock, so that no process registers a workflow naming it in between."""
        with self.registry_lock():
            return self._delete_unused_service(ref)

    @serialised
    def _delete_unused_service(self, ref: str) -> dict:
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
        self.flow.forget(service["name"])
        self.writes += 1
        return service

    @serialised
    def put_workflow(self, definition: Mapping[str, Any]) -> tuple[dict, bool]:
        """Register a workflow, or replace the one of that name and bump its version."""
        self._workflows_read.clear()
        document, created = self._put(self.workflows, definition, bump_version=True)
        return _out(document, "workflow_id"), created

    @serialised
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

    @serialised
    def list_workflows(self, page: int, page_size: int) -> tuple[list[dict], int]:
        return self._page(self.workflows, {}, [("name", 1)], page, page_size, "workflow_id")

    @serialised
    def workflows_running(self, name: str) -> list[dict]:
        """The registered workflows that run the workflow `name` as a child, by name: the trees whose
        `workflows` hold it, and the trees stored before that field, whose steps are read here. Both
        are lookups of one index (RUNNING_INDEX); no other workflow is read."""
        named, unnamed = self._running_finds(name)
        found = {document["name"]: document for document in named}
        for document in unnamed:
            if "workflows" not in document and name in children_of(document):
                found[document["name"]] = document
        return [_out(found[key], "workflow_id") for key in sorted(found)]

    def _running_finds(self, name: str) -> tuple:
        """The two finds of workflows_running: the trees naming `name` in `workflows`, and the trees
        without the field (an equality with null, which is the index's null key)."""
        return (self.workflows.find({**TREES, "workflows": name}),
                self.workflows.find({**TREES, "workflows": None}))

    @serialised
    def delete_workflow(self, ref: str) -> dict:
        workflow = self.get_workflow(ref)
        self._workflows_read.clear()
        self.workflows.delete_one({"_id": ObjectId(workflow["workflow_id"])})
        self.writes += 1
        return workflow

    def _page(self, collection, query, sort, page, page_size, id_field) -> tuple[list[dict], int]:
        total = collection.estimated_document_count() if not query else collection.count_documents(query)
        cursor = collection.find(query).sort(sort).skip((page - 1) * page_size).limit(page_size)
        return [_out(doc, id_field) for doc in cursor], total

    # -- events -------------------------------------------------------------------------

    @serialised
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
        self._check_size(document["_id"])
        # The caller's own event, not a copy read back: only its top-level dates need a time zone.
        inserted = {key: _aware(value) if isinstance(value, datetime) else value for key, value in document.items()}
        inserted["event_id"] = str(inserted.pop("_id"))
        return inserted, True

    @serialised
    def get_event(self, event_id: str) -> dict:
        oid = _object_id(event_id)
        document = self.events.find_one({"_id": oid}) if oid else None
        if document is None:
            raise NotFound(f"no event {event_id!r}")
        return _out(document, "event_id")

    @serialised
    def list_events(self, page: int, page_size: int, workflow_id: str | None = None,
                    status: str | None = None,
                    attrs: Iterable[tuple[str, str, Any]] | None = None) -> tuple[list[dict], int]:
        """One page of events, newest first, and their total (a lower bound past COUNT_LIMIT)."""
        listed = self.list_events_page(page_size, page=page, workflow_id=workflow_id, status=status, attrs=attrs)
        return listed["items"], listed["total"]

    @serialised
    def list_events_page(self, page_size: int, *, page: int = 1, after: str | None = None,
                         workflow_id: str | None = None, status: str | None = None,
                         attrs: Iterable[tuple[str, str, Any]] | None = None) -> dict:
        """A page of events, newest first: the `page`-th (at most MAX_PAGE_OFFSET events skipped), or
        the one after the position `after` (a next_cursor: keyset paging, any depth at one cost, no
        duplicate and no gap while new events arrive). Returns items, total, total_is_lower_bound
        (the total counted up to COUNT_LIMIT only), and next_cursor (None on the last page). `attrs`:
        search filters, (path, operator, value) as machinery.search parses them (event_filters)."""
        query: dict[str, Any] = {}
        if workflow_id:
            query["workflow_id"] = workflow_id
        if status:
            query["status"] = status
        query.update(attr_query(attrs))
        skip = (page - 1) * page_size
        if after is None and skip > MAX_PAGE_OFFSET:
            raise InvalidData(f"page {page} would skip {skip} events; ?page skips at most {MAX_PAGE_OFFSET}: "
                              "walk on with ?cursor=<next_cursor> instead",
                              errors={"page": [f"skips at most {MAX_PAGE_OFFSET} events"]})
        if query:
            counted = self.events.count_documents(query, limit=COUNT_LIMIT)
            total, lower_bound = counted, counted >= COUNT_LIMIT
        else:
            total, lower_bound = self.events.estimated_document_count(), False
        # The page's ids first, then only those events: a covered walk of the filter's own index
        # (LIST_INDEXES) on MongoDB, and the embedded store reads one page from its in-memory ones.
        rows: list[dict] = []
        for walk in self._event_walks(query, after):
            rows.extend(walk.skip(0 if after else skip).limit(page_size + 1 - len(rows)))
            if len(rows) > page_size:
                break
        more, rows = len(rows) > page_size, rows[:page_size]
        ids = [row["_id"] for row in rows]
        found = {doc["_id"]: doc for doc in self.events.find({"_id": {"$in": ids}}, {"plan": 0, "context": 0})}
        last = rows[-1] if rows else None
        return {"items": [_out(found[oid], "event_id") for oid in ids if oid in found],
                "total": total, "total_is_lower_bound": lower_bound,
                "next_cursor": encode_cursor(last["ack_date"], last["_id"]) if more and last else None}

    def _event_walks(self, query: dict, after: str | None) -> list:
        """The finds a page of list_events reads, in order, each one index range walked newest first:
        without a position, the whole filter; after one, the events of its very ack_date with a
        smaller id, then every older one. Two plain ranges rather than one $or, so that each is a
        single index bound and never a merge or a sort."""
        project = {"_id": 1, "ack_date": 1}
        if after is None:
            return [self.events.find(query, project).sort(NEWEST_FIRST)]
        when, oid = decode_cursor(after)
        return [self.events.find({**query, "ack_date": when, "_id": {"$lt": oid}}, project).sort(NEWEST_FIRST),
                self.events.find({**query, "ack_date": {"$lt": when}}, project).sort(NEWEST_FIRST)]

    @serialised
    def count_events(self, status: str) -> int:
        return self.events.count_documents({"status": status})

    @serialised
    def update_event(self, event_id: str, update: Mapping[str, Any], owner: str | None = None,
                     expect: Mapping[str, Any] | None = None) -> bool:
        """Apply one atomic update to an event, held by `owner` when given; False when it is not."""
        query: dict[str, Any] = {"_id": _object_id(event_id) or ObjectId(event_id)}  # a bad id raises, as ever
        if owner is not None:
            query["lease_owner"] = owner
        query.update(expect or {})
        result = self.events.update_one(query, update)
        self.writes += 1
        self._check_size(query["_id"])
        return result.matched_count == 1

    def _check_size(self, oid: ObjectId) -> None:
        """With MACHINERY_TEST_EVENT_MAX_BYTES set (in tests), fail loudly when an event's document
        has grown past it: large values belong in the `values` bucket, not in the event."""
        if not self.check_event_bytes:
            return
        document = self.events.find_one({"_id": oid})
        size = len(bson.encode(document)) if document is not None else 0
        if size > self.check_event_bytes:
            raise AssertionError(f"event {oid}'s document is {size} bytes, past the "
                                 f"{self.check_event_bytes} MACHINERY_TEST_EVENT_MAX_BYTES allows")

    @serialised
    def existing_events(self, event_ids: Iterable[str]) -> set[str]:
        """Which of these event ids are stored (one query of ids only)."""
        oids = [oid for oid in (_object_id(event_id) for event_id in event_ids) if oid is not None]
        if not oids:
            return set()
        return {str(document["_id"]) for document in self.events.find({"_id": {"$in": oids}}, {"_id": 1})}

    def sweep_values(self, batch: int = 200, grace_s: float | None = None) -> int:
        """One bounded pass of the values sweeper: files of events no longer stored (removed by
        retention) are deleted. Returns how many."""
        try:
            return self.values.sweep(self.existing_events, batch, grace_s)
        except (PyMongoError, DocumentTooLarge) as error:
            raise store_error(error) from error

    @serialised
    def delete_events(self, event_ids: Iterable[str]) -> int:
        """Remove events with their step records and their files."""
        oids = {event_id: oid for event_id in event_ids if (oid := _object_id(event_id)) is not None}
        ids = list(oids)
        result = self.events.delete_many({"_id": {"$in": list(oids.values())}})
        self.step_runs.delete_many({"event_id": {"$in": ids}})
        self.values.delete_for_events(ids)
        self.writes += 1
        return result.deleted_count

    @serialised
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

    @serialised
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

    @serialised
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

    @serialised
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

    @serialised
    def release_event(self, event_id: str, owner: str) -> bool:
        """Give a running event back so another worker resumes it at once."""
        return self.update_event(
            event_id, {"$set": {"status": "pending", "lease_owner": None, "lease_expires": EPOCH}},
            owner=owner, expect={"status": "running"},
        )

    @serialised
    def find_by_callback(self, token_hash: str) -> tuple[dict | None, bool]:
        """The event waiting on a callback token, and whether the token was already spent."""
        document = self.events.find_one({"waiting.token_hash": token_hash})
        if document is not None:
            return _out(document, "event_id"), False
        spent = self.events.find_one({"spent_tokens": token_hash}, {"_id": 1})
        return None, spent is not None

    def event_status(self, event_id: str) -> str | None:
        """An event's status alone (one indexed read of one field); None for an unknown event. A tree
        walk reads it before every call it starts (a cancel stops it), so the embedded store reads
        it without its lock: the threads of a map would otherwise queue on it at every item."""
        oid = _object_id(event_id)
        if oid is None:
            return None
        if self.embedded and hasattr(self.events, "field_of"):
            return self.events.field_of(oid, "status")
        return self._event_status(oid)

    @serialised
    def _event_status(self, oid: ObjectId) -> str | None:
        document = self.events.find_one({"_id": oid}, {"status": 1})
        return document["status"] if document else None

    # -- paused workflows -------------------------------------------------------------------

    @serialised
    def set_workflow_paused(self, workflow_id: str, paused: Mapping[str, Any] | None,
                            expect_paused: bool) -> bool:
        """Pause a workflow (`paused`: who and when) or resume it (None), if it is paused as
        `expect_paused` says it is not yet; False when it is not."""
        self._workflows_read.clear()
        query: dict[str, Any] = {"_id": ObjectId(workflow_id),
                                 "paused": {"$ne": None} if expect_paused else None}
        update = {"$set": {"paused": dict(paused)}} if paused is not None else {"$set": {"paused": None}}
        result = self.workflows.update_one(query, update)
        self.writes += 1
        return result.matched_count == 1

    @serialised
    def hold_events(self, workflow_id: str) -> int:
        """Keep a paused workflow's pending events that never started from being claimed; how many
        were held."""
        query = {"workflow_id": workflow_id, "status": "pending", "lease_owner": None, "claim_count": 0}
        result = self.events.update_many(query, {"$set": {"held": "paused", "lease_expires": HELD}})
        self.writes += 1
        return result.modified_count

    @serialised
    def release_events(self, workflow_id: str, event_id: str | None = None) -> int:
        """Make a resumed workflow's held events claimable (all of them, or the one `event_id`), due
        one millisecond apart in the order they arrived, so that claims take them in that order."""
        query: dict[str, Any] = {"workflow_id": workflow_id, "status": "pending", "held": "paused"}
        if event_id is not None:
            query["_id"] = ObjectId(event_id)
        released = 0
        # Read whole before the writes: no cursor is walked over documents it is changing.
        found = [document["_id"] for document in
                 self.events.find(query, {"_id": 1}).sort([("ack_date", 1), ("_id", 1)])]
        for oid in found:
            result = self.events.update_one({**query, "_id": oid}, {
                "$set": {"lease_expires": EPOCH + timedelta(milliseconds=released)}, "$unset": {"held": ""}})
            self.writes += 1
            released += result.modified_count
        return released

    # -- step records of tree events ---------------------------------------------------------

    @serialised
    def insert_step_run(self, record: Mapping[str, Any]) -> tuple[dict, bool]:
        """Insert one step record; one already there for its (event_id, run, instance) is returned
        instead, with created=False."""
        document = dict(record)
        try:
            self.step_runs.insert_one(document)
        except DuplicateKeyError:
            first = self.step_runs.find_one({key: record[key] for key in ("event_id", "run", "instance")},
                                            {"_id": 0})
            if first is None:
                raise
            return _aware(first), False
        self.writes += 1
        document.pop("_id", None)
        return document, True

    @serialised
    def update_step_run(self, event_id: str, run: int, instance: str, update: Mapping[str, Any],
                        expect: Mapping[str, Any] | None = None) -> bool:
        """One atomic update of a step record, if it matches `expect`; False when it does not."""
        query = {"event_id": event_id, "run": run, "instance": instance, **(expect or {})}
        result = self.step_runs.update_one(query, update)
        self.writes += 1
        return result.matched_count == 1

    @serialised
    def step_runs_of(self, event_id: str, runs: Iterable[int] | None = None, *, top_only: bool = False,
                     limit: int = 0) -> list[dict]:
        """An event's step records (of the runs given; outside any map item with `top_only`), oldest
        run first, at most `limit` (0: all)."""
        query: dict[str, Any] = {"event_id": event_id}
        if runs is not None:
            query["run"] = {"$in": list(runs)}
        if top_only:
            query["item"] = None
        return [_aware(document) for document in
                self.step_runs.find(query, {"_id": 0}).sort([("run", 1), ("started_at", 1)]).limit(limit)]

    @serialised
    def page_step_runs(self, event_id: str, *, node: str | None = None, item: int | None = None,
                       status: str | None = None, page: int = 1, page_size: int = 50) -> tuple[list[dict], int]:
        """A page of an event's step records, in the order they started, and their total."""
        query: dict[str, Any] = {"event_id": event_id}
        if node is not None:
            query["node"] = node
        if item is not None:
            query["item"] = item
        if status is not None:
            query["status"] = status
        total = self.step_runs.count_documents(query)
        cursor = (self.step_runs.find(query, {"_id": 0}).sort([("run", 1), ("started_at", 1), ("instance", 1)])
                  .skip((page - 1) * page_size).limit(page_size))
        return [_aware(document) for document in cursor], total

    @serialised
    def cancel_step_runs(self, event_id: str, fields: Mapping[str, Any]) -> list[dict]:
        """End an event's waiting step records with `fields` (a cancel): their callback tokens answer
        410, their timers and polls are dropped. Returns the records as they were (their children)."""
        query = {"event_id": event_id, "status": "waiting"}
        found = [_aware(document) for document in self.step_runs.find(query, {"_id": 0})]
        if found:
            self.step_runs.update_many(query, {"$set": dict(fields)})
            self.writes += 1
        return found

    @serialised
    def find_step_run_by_token(self, token_hash: str) -> dict | None:
        """The step record holding a callback token (waiting, or already completed by it)."""
        return _aware(self.step_runs.find_one({"token_hash": token_hash}, {"_id": 0}))

    # -- schedules ------------------------------------------------------------------------

    @serialised
    def insert_schedule(self, schedule: Mapping[str, Any]) -> dict:
        """Store a new schedule; Conflict when one of that name exists."""
        now = utcnow()
        document = {**_naive(schedule), "created_at": now, "updated_at": now, "ticks": [],
                    "lease_owner": None, "lease_expires": EPOCH}
        try:
            self.schedules.insert_one(document)
        except DuplicateKeyError:
            raise Conflict(f"schedule {schedule['name']!r} exists: PATCH /schedules/{schedule['name']} "
                           "changes it", errors={"name": ["taken"]}) from None
        self.writes += 1
        return _out(document, "schedule_id")

    @serialised
    def get_schedule(self, name: str) -> dict:
        document = self.schedules.find_one({"name": name})
        if document is None:
            raise NotFound(f"no schedule {name!r}")
        return _out(document, "schedule_id")

    @serialised
    def list_schedules(self, page: int, page_size: int) -> tuple[list[dict], int]:
        return self._page(self.schedules, {}, [("name", 1)], page, page_size, "schedule_id")

    @serialised
    def change_schedule(self, name: str, fields: Mapping[str, Any], expect: Mapping[str, Any] | None = None) -> dict:
        """Set fields of a schedule (which its `expect` must match) and return it; NotFound when there
        is none (or Conflict when it no longer matches `expect`). Any lease on it is dropped, so the
        next look fires from what was set."""
        update = {"$set": {**_naive(fields), "updated_at": utcnow(), "lease_owner": None, "lease_expires": EPOCH}}
        document = self.schedules.find_one_and_update({"name": name, **_naive(expect or {})}, update,
                                                      return_document=ReturnDocument.AFTER)
        if document is None:
            self.get_schedule(name)
            raise Conflict(f"schedule {name!r} changed meanwhile; read it and try again")
        self.writes += 1
        return _out(document, "schedule_id")

    @serialised
    def delete_schedule(self, name: str) -> dict:
        document = self.schedules.find_one_and_delete({"name": name})
        if document is None:
            raise NotFound(f"no schedule {name!r}")
        self.writes += 1
        return _out(document, "schedule_id")

    @serialised
    def claim_schedule(self, owner: str, lease_s: float) -> dict | None:
        """Atomically take the schedule whose tick is due soonest (not paused, not held by another),
        for `lease_s`: one walk of the schedules_due index, one write when something is due."""
        now = utcnow()
        document = self.schedules.find_one_and_update(
            due_schedules(now),
            {"$set": {"lease_owner": owner, "lease_expires": now + timedelta(seconds=lease_s)}},
            sort=SCHEDULES_DUE, return_document=ReturnDocument.AFTER,
        )
        if document is None:
            return None
        self.writes += 1
        return _out(document, "schedule_id")

    @serialised
    def advance_schedule(self, name: str, owner: str, due: datetime, fields: Mapping[str, Any],
                         tick: Mapping[str, Any] | None = None) -> bool:
        """Move a schedule held by `owner` on from its tick `due`: set `fields` (its next_run among
        them), record `tick` among its last ticks, release it. False when it is no longer held at that
        tick (changed, or taken over after its lease): then nothing is written."""
        update: dict[str, Any] = {"$set": {**_naive(fields), "lease_owner": None, "lease_expires": EPOCH}}
        if tick is not None:
            update["$push"] = {"ticks": {"$each": [_naive(tick)], "$slice": -SCHEDULE_TICKS_KEPT}}
            update["$inc"] = {f"counts.{tick['result']}": tick.get("count", 1)}
        result = self.schedules.update_one({"name": name, "lease_owner": owner, "next_run": _naive(due)}, update)
        self.writes += 1
        return result.matched_count == 1

    @serialised
    def hold_schedule(self, name: str, owner: str, until: datetime, fields: Mapping[str, Any]) -> bool:
        """Keep a schedule held by `owner` unfired until `until` (its tick waits), setting `fields`."""
        result = self.schedules.update_one({"name": name, "lease_owner": owner},
                                           {"$set": {**_naive(fields), "lease_expires": _naive(until)}})
        self.writes += 1
        return result.matched_count == 1

    @serialised
    def pending_events_by_status(self) -> dict[str, int]:
        return {status: self.events.count_documents({"status": status}) for status in ACTIVE}

    # -- the dashboard's rollups ----------------------------------------------------------

    @serialised
    def add_rollup(self, workflow: str, bucket: datetime, inc: Mapping[str, float],
                   maxima: Mapping[str, float], names: Mapping[str, str]) -> None:
        """Add one process's counts to a workflow's bucket: one upsert, whatever it holds."""
        update: dict[str, Any] = {"$setOnInsert": {"workflow": workflow, "bucket": bucket}}
        if inc:
            update["$inc"] = dict(inc)
        if maxima:
            update["$max"] = dict(maxima)
        if names:
            update["$set"] = dict(names)
        self.rollups.update_one({"_id": f"{workflow}|{bucket.isoformat()}"}, update, upsert=True)
        self.writes += 1

    @serialised
    def rollups_since(self, since: datetime) -> list[dict]:
        """Every workflow's buckets from `since` on, in no order (read through the expiry index on `bucket`)."""
        return list(self.rollups.find({"bucket": {"$gte": since}}))


def _identity(index: Mapping[str, Any]) -> dict:
    """The options of an index that MongoDB compares when the same name or keys come again."""
    options = {key: index[key] for key in ("partialFilterExpression", "expireAfterSeconds", "collation")
               if index.get(key) is not None}
    for flag in ("unique", "sparse"):
        if index.get(flag):
            options[flag] = True
    return options


def _refuse_expiry(seconds: Any) -> None:
    if not 0 <= seconds <= MAX_EXPIRE_AFTER_S:
        message = (f"TTL index 'expireAfterSeconds' option must be within an acceptable range: "
                   f"0 to {MAX_EXPIRE_AFTER_S}, not {seconds}")
        raise OperationFailure(message, code=67,
                               details={"codeName": "CannotCreateIndex", "code": 67, "errmsg": message})


def _refuse_as_mongodb(collection, keys: list, options: Mapping[str, Any]) -> None:
    """Refuse, as MongoDB does, the indexes mongomock lets through: a TTL out of 0..2147483647 (67),
    the same keys under another name (85), the same name with other keys or options (86)."""
    if options.get("expireAfterSeconds") is not None:
        _refuse_expiry(options["expireAfterSeconds"])
    name, wanted = options["name"], _identity(options)
    for index in collection.list_indexes():
        existing = [(field, order) for field, order in dict(index["key"]).items()]
        if index["name"] == name:
            if existing != list(keys) or _identity(index) != wanted:
                raise OperationFailure(
                    "An existing index has the same name as the requested index", code=86,
                    details={"codeName": "IndexKeySpecsConflict", "code": 86, "errmsg":
                             f"An existing index has the same name as the requested index: {name!r} "
                             f"is {existing} {_identity(index)}, not {list(keys)} {wanted}"})
            return
        if existing == list(keys) and {key: value for key, value in _identity(index).items()
                                       if key in ("partialFilterExpression", "collation")} == \
                {key: value for key, value in wanted.items() if key in ("partialFilterExpression", "collation")}:
            raise OperationFailure(
                "Index already exists with a different name", code=85,
                details={"codeName": "IndexOptionsConflict", "code": 85,
                         "errmsg": f"Index already exists with a different name: {index['name']}"})

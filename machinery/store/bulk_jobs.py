"""The bulk_jobs collection: one document per bulk action, claimed with a lease and advanced page by page.

A job records the cursor of the last page it applied (the newest-first position of list_events), so a
process that takes over an abandoned job (its lease expired) goes on after it. Each page's counts and
cursor are written in one update conditioned on the cursor it started from and on the holder, so a page
is counted once even if two processes ever ran it.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any, Mapping

from bson import ObjectId
from pymongo import ReturnDocument

from machinery.exceptions import NotFound
from machinery.store.errors import serialised

BULK_JOBS = "bulk_jobs"
SAMPLES_KEPT = 20  # of each outcome, a job keeps the first few event ids (with why, for skips and failures)
OPEN = ("pending", "running")


def _out(document: Mapping[str, Any] | None) -> dict | None:
    from machinery.store.store import _out as out

    return out(document, "job_id")


class BulkJobs:
    """Bulk jobs, and the reads of events they page through (through the Store's events collection)."""

    def __init__(self, store):
        self.store = store
        self._guard = store._guard  # what `serialised` holds
        self.collection = store.db[BULK_JOBS]

    def ensure_indexes(self, index) -> None:
        index(self.collection, [("status", 1), ("lease_expires", 1)], name="bulk_jobs_due")
        index(self.collection, [("created_at", -1), ("_id", -1)], name="bulk_jobs_newest")

    # -- jobs ----------------------------------------------------------------------------------------

    @serialised
    def insert(self, job: Mapping[str, Any]) -> dict:
        document = {**job, "_id": ObjectId()}
        self.collection.insert_one(document)
        self.store.writes += 1
        return _out(document)

    @serialised
    def get(self, job_id: str) -> dict:
        from machinery.store.store import _object_id

        oid = _object_id(job_id)
        document = self.collection.find_one({"_id": oid}) if oid else None
        if document is None:
            raise NotFound(f"no bulk job {job_id!r}")
        return _out(document)

    @serialised
    def list(self, page: int, page_size: int) -> tuple[list[dict], int]:
        total = self.collection.count_documents({})
        cursor = self.collection.find({}).sort([("created_at", -1), ("_id", -1)]).skip((page - 1) * page_size)
        return [_out(document) for document in cursor.limit(page_size)], total

    @serialised
    def claim(self, owner: str, lease_s: float, now) -> dict | None:
        """Take a job to advance: pending, or running with an expired lease (its holder stopped)."""
        document = self.collection.find_one_and_update(
            {"status": {"$in": list(OPEN)}, "lease_expires": {"$lte": now}},
            {"$set": {"status": "running", "lease_owner": owner, "lease_expires": now + timedelta(seconds=lease_s),
                      "updated_at": now},
             "$inc": {"claims": 1}},
            sort=[("lease_expires", 1)], return_document=ReturnDocument.AFTER)
        if document is not None:
            self.store.writes += 1
        return _out(document)

    @serialised
    def record_page(self, job_id: str, owner: str, cursor: str | None, update: Mapping[str, Any]) -> bool:
        """Apply one page's update to a job still held by `owner` and still at `cursor`; False when not."""
        result = self.collection.update_one(
            {"_id": ObjectId(job_id), "lease_owner": owner, "cursor": cursor, "status": "running"}, update)
        self.store.writes += 1
        return result.matched_count == 1

    # -- the events a job walks ----------------------------------------------------------------------

    @serialised
    def count_events(self, query: Mapping[str, Any], limit: int) -> int:
        return self.store.events.count_documents(dict(query), limit=limit)

    @serialised
    def event_page(self, query: Mapping[str, Any], after: str | None, limit: int) -> tuple[list[str], str | None]:
        """The ids of up to `limit` events matching `query`, newest first after the position `after`,
        and the position of the last one (None when none is left)."""
        from machinery.store.store import encode_cursor

        rows: list[dict] = []
        for walk in self.store._event_walks(dict(query), after):
            rows.extend(walk.limit(limit + 1 - len(rows)))
            if len(rows) > limit:
                break
        more, rows = len(rows) > limit, rows[:limit]
        last = rows[-1] if rows else None
        position = encode_cursor(last["ack_date"], last["_id"]) if more and last else None
        return [str(row["_id"]) for row in rows], position

"""Large values kept out of the event document: files in GridFS's layout, content-addressed per event.

A value above MACHINERY_OFFLOAD_BYTES is kept as one file of the bucket `values` (`values.files`,
`values.chunks`), laid out as GridFS lays out a file (the files document: `_id`, `length`,
`chunkSize`, `uploadDate`, `filename`, `metadata`; chunks of at most 255 KiB: `files_id`, `n`,
`data`), so `gridfs.GridFSBucket(db, "values")` reads them on MongoDB. They are written and read
here with plain pymongo calls rather than through the `gridfs` package: that package refuses
mongomock's database (and mongomock's way round it patches `gridfs` for the whole process, real
MongoDB clients included), and one code path on both stores is what the store's tests can prove.

A file's `_id` is ``<event id>-<sha256 of the value's JSON>``: the same value written again by a
replay of the same event is the same file, stored once. The chunks go first and the files document
last, so a file whose document is there is whole; chunks without one (a writer that stopped in
between) are replaced by the next write of that value, or swept with their event.
"""

from __future__ import annotations

import hashlib
import threading
from datetime import UTC, datetime, timedelta
from typing import Any, Iterable, Iterator

import pymongo
from bson import Binary
from pymongo.errors import BulkWriteError, DuplicateKeyError

from machinery.clock import utcnow

BUCKET = "values"
CHUNK_BYTES = 255 * 1024  # GridFS's default chunk size
FILE_ID_LENGTH = 24 + 1 + 64  # an event id, '-', a sha256 in hex
INSERT_CHUNKS = 8  # chunks per insert: 2 MiB
READ_CHUNKS = 8  # chunks per find
SWEEP_BATCH = 200  # files looked at per sweep pass
SWEEP_GRACE_S = 600.0  # a file younger than this is never swept: its event may not be stored yet


def file_id(event_id: str, sha256: str) -> str:
    return f"{event_id}-{sha256}"


def event_of(ref: str) -> str:
    """The event id a file id names."""
    return ref.split("-", 1)[0]


def is_file_id(ref: Any) -> bool:
    if not isinstance(ref, str) or len(ref) != FILE_ID_LENGTH or ref[24] != "-":
        return False
    return all(char in "0123456789abcdef" for char in ref[:24] + ref[25:])


class ValueStore:
    """The `values` bucket of one database; `guard` is the store's lock (mongomock is not thread-safe)."""

    def __init__(self, database, guard, *, embedded: bool = False):
        self.files = database[f"{BUCKET}.files"]
        self.chunks = database[f"{BUCKET}.chunks"]
        self.embedded = embedded
        self._guard = guard
        self._sweep_after: str | None = None  # where the next sweep pass goes on from
        self._orphans_after: str | None = None  # the same, for chunks without their files document
        self._sweep_lock = threading.Lock()
        self.written = 0  # files written (not found already there), for tests and benchmarks
        self.grace_s = SWEEP_GRACE_S

    def ensure_indexes(self, create) -> None:
        """GridFS's own indexes: chunks unique by (files_id, n), files by (filename, uploadDate)."""
        create(self.chunks, [("files_id", 1), ("n", 1)], unique=True)
        create(self.files, [("filename", 1), ("uploadDate", 1)])
        create(self.files, [("metadata.event_id", 1)], name="values_by_event")

    def put(self, event_id: str, data: bytes, sha256: str | None = None) -> tuple[str, str]:
        """Store `data` (a value's JSON) as a file of `event_id`; (its id, its sha256). A file already
        there for that event and content is not written again."""
        sha256 = sha256 or hashlib.sha256(data).hexdigest()
        ref = file_id(event_id, sha256)
        with self._guard:
            if self.files.find_one({"_id": ref}, {"_id": 1}) is not None:
                return ref, sha256
            try:
                self._insert_chunks(ref, data)
            except (DuplicateKeyError, BulkWriteError):  # chunks of a write that never finished: written anew
                self.chunks.delete_many({"files_id": ref})
                self._insert_chunks(ref, data)
            try:
                self.files.insert_one({
                    "_id": ref, "length": len(data), "chunkSize": CHUNK_BYTES, "uploadDate": utcnow(),
                    "filename": ref, "metadata": {"event_id": event_id, "sha256": sha256,
                                                  "contentType": "application/json"}})
            except DuplicateKeyError:
                pass  # another writer stored the same value of the same event meanwhile
            self.written += 1
        return ref, sha256

    def _insert_chunks(self, ref: str, data: bytes) -> None:
        """The chunks, a few per insert (one insert of a 64 MiB value would pass MongoDB's 48 MB
        message size), each batch sliced from `data` as it is sent, so that no second copy of the
        whole value is held."""
        view = memoryview(data)
        starts = range(0, max(len(data), 1), CHUNK_BYTES)
        for first in range(0, len(starts), INSERT_CHUNKS):
            batch = [{"files_id": ref, "n": number, "data": Binary(bytes(view[start:start + CHUNK_BYTES]))}
                     for number, start in enumerate(starts[first:first + INSERT_CHUNKS], first)]
            self.chunks.insert_many(batch, ordered=True)

    def length(self, ref: str) -> int | None:
        """The size of a whole file in bytes; None when there is none."""
        with self._guard:
            document = self.files.find_one({"_id": ref}, {"length": 1})
        return None if document is None else document["length"]

    def read(self, ref: str) -> bytearray | None:
        """A whole file's bytes, into one buffer; None when there is none."""
        buffer = bytearray()
        return buffer if self.read_into(ref, buffer) else None

    def read_into(self, ref: str, buffer: bytearray) -> bool:
        """Append a whole file's bytes to `buffer`, walking its chunks with one cursor (MongoDB sends
        them in batches; the embedded store scans its chunks once, not once a batch); False when
        there is no such file."""
        length = self.length(ref)
        if length is None:
            return False
        start, expected = len(buffer), 0
        with self._guard:
            for chunk in self.chunks.find({"files_id": ref}, {"_id": 0, "n": 1, "data": 1}).sort("n", 1):
                if chunk["n"] != expected:
                    raise LookupError(f"file {ref}: chunk {expected} is missing")
                buffer += chunk["data"]
                expected += 1
        if len(buffer) - start != length:
            raise LookupError(f"file {ref}: {len(buffer) - start} bytes of its {length} are stored")
        return True

    def stream(self, ref: str) -> Iterator[bytes] | None:
        """A file's chunks in order (read a few at a time); None when there is no such file."""
        length = self.length(ref)
        if length is None:
            return None
        return self.chunks_of(ref, length)

    def chunks_of(self, ref: str, length: int) -> Iterator[bytes]:
        """The chunks of a file of `length` bytes (as its files document says), in order, read a few at a
        time: for a reader that has read the length already."""
        count = (length + CHUNK_BYTES - 1) // CHUNK_BYTES
        for start in range(0, count, READ_CHUNKS):
            with self._guard:
                found = list(self.chunks.find({"files_id": ref, "n": {"$gte": start, "$lt": start + READ_CHUNKS}},
                                              {"_id": 0, "n": 1, "data": 1}).sort("n", 1))
            for offset, chunk in enumerate(found):
                if chunk["n"] != start + offset:
                    raise LookupError(f"file {ref}: chunk {start + offset} is missing")
                found[offset] = None  # each chunk let go once it is given
                yield chunk["data"]
            if len(found) < min(READ_CHUNKS, count - start):
                raise LookupError(f"file {ref}: chunk {start + len(found)} is missing")

    def delete_for_events(self, event_ids: Iterable[str]) -> int:
        """Remove every file of these events; how many there were."""
        ids = list(event_ids)
        if not ids:
            return 0
        with self._guard:
            refs = [document["_id"] for document in
                    self.files.find({"metadata.event_id": {"$in": ids}}, {"_id": 1})]
            self._delete(refs)
            # Chunks a stopped writer left without their files document go too: the ids `<event>-...`
            # sort between `<event>-` and `<event>.`, one range of the (files_id, n) index per event.
            for event_id in ids:
                self.chunks.delete_many({"files_id": {"$gt": f"{event_id}-", "$lt": f"{event_id}."}})
        return len(refs)

    def _delete(self, refs: list[str]) -> None:
        if refs:
            self.files.delete_many({"_id": {"$in": refs}})
            self.chunks.delete_many({"files_id": {"$in": refs}})

    def sweep(self, event_exists, batch: int = SWEEP_BATCH, grace_s: float | None = None) -> int:
        """One bounded pass: look at up to `batch` files after where the last pass stopped, and remove
        those older than `grace_s` whose event is gone (`event_exists(ids)` answers the ids still there).
        Returns the files removed; a pass that reaches the end starts the next one from the beginning."""
        with self._sweep_lock:
            after = self._sweep_after
            query: dict[str, Any] = {"_id": {"$gt": after}} if after else {}
            with self._guard:
                found = list(self.files.find(query, {"_id": 1, "uploadDate": 1, "metadata.event_id": 1})
                             .sort("_id", pymongo.ASCENDING).limit(batch))
            self._sweep_after = found[-1]["_id"] if len(found) == batch else None
            old = utcnow() - timedelta(seconds=self.grace_s if grace_s is None else grace_s)
            candidates = [document for document in found if document["uploadDate"] <= old]
            alive = event_exists({document["metadata"]["event_id"] for document in candidates})
            gone = [document["_id"] for document in candidates if document["metadata"]["event_id"] not in alive]
            with self._guard:
                self._delete(gone)
            return len(gone) + self._sweep_chunks(event_exists, batch, old)

    def _sweep_chunks(self, event_exists, batch: int, old: datetime) -> int:
        """The same for chunks a stopped writer left without their files document: the first chunk of
        up to `batch` values after where the last pass stopped (one range of the (files_id, n)
        index), removed when they have no files document, are older than `old` (their ObjectId's
        time) and their event is gone. Returns the values whose chunks were removed."""
        after = self._orphans_after
        query: dict[str, Any] = {"n": 0, **({"files_id": {"$gt": after}} if after else {})}
        with self._guard:
            firsts = list(self.chunks.find(query, {"files_id": 1}).sort("files_id", pymongo.ASCENDING).limit(batch))
        self._orphans_after = firsts[-1]["files_id"] if len(firsts) == batch else None
        cutoff = old.replace(tzinfo=UTC)
        aged = {chunk["files_id"] for chunk in firsts if chunk["_id"].generation_time <= cutoff}
        if not aged:
            return 0
        with self._guard:
            whole = {document["_id"] for document in self.files.find({"_id": {"$in": list(aged)}}, {"_id": 1})}
        candidates = aged - whole
        alive = event_exists({event_of(ref) for ref in candidates})
        orphans = [ref for ref in candidates if event_of(ref) not in alive]
        if orphans:
            with self._guard:
                self.chunks.delete_many({"files_id": {"$in": orphans}})
        return len(orphans)

    def count(self) -> tuple[int, int]:
        """(files, chunks) in the bucket, for tests and the sweeper's checks."""
        with self._guard:
            return self.files.count_documents({}), self.chunks.count_documents({})
